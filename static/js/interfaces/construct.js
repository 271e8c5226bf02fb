// Construct: one image of the pair's grid, stepped with G/H or the buttons.
(function () {
  "use strict";
  const { el, fill, confidenceBlock } = window.HillMix;

  HillMix.renderers.construct = function (trial, root, submit) {
    // The grid in step order; the page knows steps, never lams.
    const last = trial.images.length - 1;
    let at = trial.start_step;
    const steps = [at];
    const img = el("img", { class: "stimulus pixelated", id: "stimulus", alt: gettext("mixed image") });
    const conf = trial.ask_confidence ? confidenceBlock(update) : null;
    const next = el("button", { type: "button", id: "continue", onclick: finish }, gettext("Continue"));
    function show() { img.src = trial.images[at].url; img.dataset.step = at; }
    function step(delta) {
      const to = Math.max(0, Math.min(last, at + delta));
      if (to !== at) { at = to; steps.push(at); show(); }
    }
    function update() { next.disabled = conf ? !conf.touched : false; }
    function onKey(ev) {
      if (ev.target && ev.target.tagName === "TEXTAREA") return;
      if (ev.key === "g" || ev.key === "G") { step(-1); ev.preventDefault(); }
      if (ev.key === "h" || ev.key === "H") { step(+1); ev.preventDefault(); }
    }
    function finish() {
      if (next.disabled) return;
      document.removeEventListener("keydown", onKey);
      submit({ start_step: trial.start_step, final_step: at, steps: steps.slice() },
        conf ? conf.value() : null);
    }
    document.addEventListener("keydown", onKey);
    root.append(
      el("p", { class: "prompt" }, ...fill(gettext("Imagine 100 other people looking at this image. Change it until you think %(half)s would say it shows a %(class1)s and half a %(class2)s."),
        { half: el("strong", {}, gettext("half of them")), class1: trial.class1, class2: trial.class2 })),
      el("div", { class: "stage" }, img),
      el("div", { class: "nav-row" },
        el("button", { type: "button", class: "secondary", id: "toward-2", onclick: () => step(-1) },
          interpolate(gettext("◀ more %(class)s (G)"), { class: trial.class2 }, true)),
        el("button", { type: "button", class: "secondary", id: "toward-1", onclick: () => step(+1) },
          interpolate(gettext("more %(class)s (H) ▶"), { class: trial.class1 }, true))),
      el("p", { class: "muted" }, gettext("Keys: G and H change the image; Enter or the button continues.")),
    );
    if (conf) root.append(conf.node);
    root.append(el("div", { class: "nav-row" }, next));
    show(); update();
    (conf ? conf.node.querySelector("input") : next).focus();
  };
})();
