// Admin pages: a <select data-autosubmit> sends its form when changed (instead of an
// inline onchange handler, which the site's Content-Security-Policy refuses).
(function () {
  "use strict";
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
})();
