// Soft categorical label: most probable class, an optional second, impossible ones.
(function () {
  "use strict";
  const { el, confidenceBlock } = window.HillMix;

  HillMix.renderers.soft_label = function (trial, root, submit) {
    const names = trial.class_names;
    const message = el("p", { class: "error", id: "soft-error", role: "alert", hidden: true });
    const option = (value, text) => el("option", { value }, text);
    const first = el("select", { id: "first-class", onchange: sync }, option("", gettext("— choose —")), ...names.map((n) => option(n, n)));
    const firstProb = el("input", { type: "number", id: "first-prob", min: 0, max: 100, step: 1, inputmode: "numeric" });
    const second = el("select", { id: "second-class", onchange: sync }, option("", gettext("none")), ...names.map((n) => option(n, n)));
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
      if (!first.value) problem = gettext("Choose the most probable category.");
      else if (!(p1 > 0 && p1 <= 100)) problem = gettext("Give the most probable category a probability between 1 and 100.");
      else if (second.value && second.value === first.value) problem = gettext("The second category must differ from the first.");
      else if (second.value && !(p2 >= 0 && p2 <= p1)) problem = gettext("Give the second category a probability between 0 and the first one's.");
      else if (conf && !conf.touched) problem = gettext("Please move the confidence slider.");
      if (problem) { message.textContent = problem; message.hidden = false; return; }
      submit({
        first_class: first.value, first_prob: p1,
        second_class: second.value || null, second_prob: second.value ? p2 : null,
        impossible: boxes.filter((b) => b.checked).map((b) => b.value),
      }, conf ? conf.value() : null);
    }
    root.append(
      el("p", { class: "prompt" }, gettext("Imagine 100 other people looking at this image.")),
      el("div", { class: "stage" }, el("img", { class: "stimulus pixelated", id: "stimulus", src: trial.image, alt: gettext("mixed image") })),
      el("div", { class: "form-grid" },
        el("label", { for: "first-class" }, gettext("Most probable category")), first,
        el("label", { for: "first-prob" }, gettext("Its probability (0–100)")), firstProb,
        el("label", { for: "second-class" }, gettext("Second most probable (optional)")), second,
        el("label", { for: "second-prob" }, gettext("Its probability (0–100)")), secondProb),
      el("fieldset", { class: "impossible" }, el("legend", {}, gettext("Which categories are impossible?")),
        ...boxes.map((b) => el("label", { class: "check inline" }, b, b.value))),
    );
    if (conf) root.append(conf.node);
    root.append(message, el("div", { class: "nav-row" }, el("button", { type: "button", id: "next", onclick: finish }, gettext("Next"))));
  };
})();
