// Soft categorical label: most probable class, an optional second, impossible ones.
(function () {
  "use strict";
  const { el, slider, confidenceBlock } = window.HillMix;

  HillMix.renderers.soft_label = function (trial, root, submit) {
    const names = trial.class_names;
    const message = el("p", { class: "error", id: "soft-error", role: "alert", hidden: true });
    const option = (value, text) => el("option", { value }, text);
    const first = el("select", { id: "first-class", onchange: sync }, option("", "— choose —"), ...names.map((n) => option(n, n)));
    const firstProb = el("input", { type: "number", id: "first-prob", min: 0, max: 100, step: 1, inputmode: "numeric" });
    const second = el("select", { id: "second-class", onchange: sync }, option("", "none"), ...names.map((n) => option(n, n)));
    const secondProb = el("input", { type: "number", id: "second-prob", min: 0, max: 100, step: 1, inputmode: "numeric", disabled: true });
    const boxes = names.map((n) => el("input", { type: "checkbox", value: n, id: `impossible-${n}` }));
    const conf = trial.ask_confidence ? confidenceBlock(() => {}) : null;
    function sync() {
      secondProb.disabled = !second.value;
      if (!second.value) secondProb.value = "";
      boxes.forEach((b) => {
        const chosen = b.value === first.value || b.value === second.value;
        b.disabled = chosen;
        if (chosen) b.checked = false;
      });
    }
    function number(input) {
      const v = input.value.trim();
      return v === "" ? NaN : Number(v);
    }
    function finish() {
      const p1 = number(firstProb), p2 = number(secondProb);
      let problem = null;
      if (!first.value) problem = "Choose the most probable category.";
      else if (!(p1 > 0 && p1 <= 100)) problem = "Give the most probable category a probability between 1 and 100.";
      else if (second.value && second.value === first.value) problem = "The second category must differ from the first.";
      else if (second.value && !(p2 >= 0 && p2 <= p1)) problem = "Give the second category a probability between 0 and the first one's.";
      else if (conf && !conf.touched) problem = "Please move the confidence slider.";
      if (problem) { message.textContent = problem; message.hidden = false; return; }
      submit({
        first_class: first.value, first_prob: p1,
        second_class: second.value || null, second_prob: second.value ? p2 : null,
        impossible: boxes.filter((b) => b.checked).map((b) => b.value),
      }, conf ? conf.value() : null);
    }
    root.append(
      el("p", { class: "prompt" }, "Imagine 100 other people looking at this image."),
      el("div", { class: "stage" }, el("img", { class: "stimulus pixelated", id: "stimulus", src: trial.image, alt: "mixed image" })),
      el("div", { class: "form-grid" },
        el("label", { for: "first-class" }, "Most probable category"), first,
        el("label", { for: "first-prob" }, "Its probability (0–100)"), firstProb,
        el("label", { for: "second-class" }, "Second most probable (optional)"), second,
        el("label", { for: "second-prob" }, "Its probability (0–100)"), secondProb),
      el("fieldset", { class: "impossible" }, el("legend", {}, "Which categories are impossible?"),
        ...boxes.map((b) => el("label", { class: "check inline" }, b, b.value))),
    );
    if (conf) root.append(conf.node);
    root.append(message, el("div", { class: "nav-row" }, el("button", { type: "button", id: "next", onclick: finish }, "Next")));
  };
})();
