// Infer mixing factor: one image, the mixing slider and the confidence slider.
(function () {
  "use strict";
  const { el, fill, slider, confidenceBlock } = window.HillMix;

  HillMix.renderers.infer = function (trial, root, submit) {
    const message = el("p", { class: "error", id: "ask-move", role: "alert", hidden: true });
    // 0 is "100% class 1", 100 is "100% class 2"; it starts where the server said.
    const classes = { class1: trial.class1, class2: trial.class2 };
    const mix = slider({ id: "mixing",
      label: interpolate(gettext("What share of 100 people would say %(class1)s vs %(class2)s?"), classes, true),
      left: interpolate(gettext("%(share)s %(class)s"), { share: "100%", class: trial.class1 }, true),
      right: interpolate(gettext("%(share)s %(class)s"), { share: "100%", class: trial.class2 }, true),
      start: trial.slider_start ?? 50,
      readout: (v) => interpolate(gettext("%(share1)s %(class1)s, %(share2)s %(class2)s"),
        Object.assign({ share1: `${100 - v}%`, share2: `${v}%` }, classes), true),
      onTouch: () => { message.hidden = true; } });
    const conf = confidenceBlock(() => { message.hidden = true; });
    const next = el("button", { type: "button", id: "next", onclick: finish }, gettext("Next"));
    function finish() {
      const missing = !mix.touched && !conf.touched
        ? gettext("Please move the first slider and the confidence slider to give your answer.")
        : !mix.touched ? gettext("Please move the first slider to give your answer.")
          : !conf.touched ? gettext("Please move the confidence slider to give your answer.") : null;
      if (missing) {
        message.textContent = missing;
        message.hidden = false;
        return;
      }
      submit({ slider: mix.value(), confidence: conf.value(), slider_touched: true, confidence_touched: true,
        slider_start: mix.start }, null);
    }
    root.append(
      el("p", { class: "prompt" }, ...fill(gettext("This image blends a %(class1)s and a %(class2)s. Imagine 100 other people looking at it."),
        { class1: el("strong", {}, trial.class1), class2: el("strong", {}, trial.class2) })),
      el("div", { class: "stage" }, el("img", { class: "stimulus pixelated", id: "stimulus", src: trial.image, alt: gettext("mixed image") })),
      mix.node, conf.node, message, el("div", { class: "nav-row" }, next));
  };
})();
