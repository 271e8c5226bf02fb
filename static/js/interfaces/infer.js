// Infer mixing factor: one image, the mixing slider and the confidence slider.
(function () {
  "use strict";
  const { el, slider, confidenceBlock } = window.HillMix;

  HillMix.renderers.infer = function (trial, root, submit) {
    const message = el("p", { class: "error", id: "ask-move", role: "alert", hidden: true });
    // 0 is "100% class 1", 100 is "100% class 2"; it starts where the server said.
    const mix = slider({ id: "mixing", label: `What share of 100 people would say ${trial.class1} vs ${trial.class2}?`,
      left: `100% ${trial.class1}`, right: `100% ${trial.class2}`, start: trial.slider_start ?? 50,
      readout: (v) => `${100 - v}% ${trial.class1}, ${v}% ${trial.class2}`, onTouch: () => { message.hidden = true; } });
    const conf = confidenceBlock(() => { message.hidden = true; });
    const next = el("button", { type: "button", id: "next", onclick: finish }, "Next");
    function finish() {
      const missing = [!mix.touched && "the first slider", !conf.touched && "the confidence slider"].filter(Boolean);
      if (missing.length) {
        message.textContent = `Please move ${missing.join(" and ")} to give your answer.`;
        message.hidden = false;
        return;
      }
      submit({ slider: mix.value(), confidence: conf.value(), slider_touched: true, confidence_touched: true,
        slider_start: mix.start }, null);
    }
    root.append(
      el("p", { class: "prompt" }, "This image blends a ", el("strong", {}, trial.class1), " and a ",
        el("strong", {}, trial.class2), ". Imagine 100 other people looking at it."),
      el("div", { class: "stage" }, el("img", { class: "stimulus pixelated", id: "stimulus", src: trial.image, alt: "mixed image" })),
      mix.node, conf.node, message, el("div", { class: "nav-row" }, next));
  };
})();
