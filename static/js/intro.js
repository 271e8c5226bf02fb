// The steps before the trials, as screens of one page: consent (on the first visit),
// the instruction pages, then the quiz. The page's one form sends them together.
(function () {
  "use strict";
  const consent = document.getElementById("consent");
  const instructions = document.getElementById("instructions");
  const quiz = document.getElementById("quiz");
  const pages = Array.from(document.querySelectorAll(".instruction-page"));
  const back = document.getElementById("instr-back");
  const next = document.getElementById("instr-next");
  const done = document.getElementById("instr-done");
  let at = 0;

  function showScreen(screen) {
    document.querySelectorAll(".intro-screen").forEach((s) => { s.hidden = s !== screen; });
  }

  function showPage() {
    pages.forEach((p, i) => { p.hidden = i !== at; });
    back.hidden = at === 0;
    next.hidden = at >= pages.length - 1;
    done.hidden = at < pages.length - 1;
    (done.hidden ? next : done).focus();
  }

  back.addEventListener("click", () => { at = Math.max(0, at - 1); showPage(); });
  next.addEventListener("click", () => { at = Math.min(pages.length - 1, at + 1); showPage(); });
  if (quiz) {
    done.addEventListener("click", () => { showScreen(quiz); quiz.querySelector("input").focus(); });
    document.getElementById("quiz-back").addEventListener("click", () => { showScreen(instructions); done.focus(); });
  }
  if (consent) {
    // Every box ticked before anything else is shown; the server checks again.
    document.getElementById("consent-submit").addEventListener("click", () => {
      const unticked = Array.from(consent.querySelectorAll("input[type=checkbox]")).find((box) => !box.checked);
      if (unticked) { unticked.reportValidity(); return; }
      showScreen(instructions);
      showPage();
    });
  } else {
    showPage();
  }
})();
