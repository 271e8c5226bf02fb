// Select-Shuffled: every grid image in the order the server chose; click the 50/50 one.
(function () {
  "use strict";
  const { el, fill, confidenceBlock } = window.HillMix;

  HillMix.renderers.select_shuffled = function (trial, root, submit) {
    let chosen = null;
    const conf = trial.ask_confidence ? confidenceBlock(update) : null;
    const next = el("button", { type: "button", id: "next", disabled: true, onclick: finish }, gettext("Next"));
    const buttons = trial.images.map((im, i) => el("button", {
      type: "button", class: "choice", "data-choice": im.choice, "aria-pressed": "false",
      "aria-label": interpolate(gettext("image %(number)s"), { number: i + 1 }, true), onclick: () => choose(i),
    }, el("img", { class: "pixelated", src: im.url, alt: "" })));
    function choose(i) {
      chosen = i;
      buttons.forEach((b, j) => b.setAttribute("aria-pressed", j === i ? "true" : "false"));
      update();
    }
    function update() { next.disabled = chosen === null || (conf && !conf.touched); }
    function finish() {
      if (next.disabled) return;
      submit({ choice: trial.images[chosen].choice, order_shown: trial.images.map((im) => im.choice) },
        conf ? conf.value() : null);
    }
    root.append(
      el("p", { class: "prompt" }, ...fill(gettext("Imagine 100 other people looking at these images. Click the one you think %(half)s would call a %(class1)s and half a %(class2)s."),
        { half: el("strong", {}, gettext("half of them")), class1: trial.class1, class2: trial.class2 })),
      el("div", { class: "choice-grid" }, ...buttons),
    );
    if (conf) root.append(conf.node);
    root.append(el("div", { class: "nav-row" }, next));
  };
})();
