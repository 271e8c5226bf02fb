// Two-alternative forced choice (2AFC): one image, its two classes on two buttons (keys
// F and J); which class is on the left (F) is the server's per-trial `swapped`. The trial
// page's key guard (trials.js) lets through only presses begun after the image is on
// screen, never auto-repeat. Without confidence a choice answers at once; with it, the
// choice can change until Next.
(function () {
  "use strict";
  const { el, fill, confidenceBlock } = window.HillMix;

  window.HillMix.renderers.afc = function (trial, root, submit) {
    const sides = trial.swapped ? [2, 1] : [1, 2]; // which class (1 or 2) is on F, on J
    const name = (k) => (k === 1 ? trial.class1 : trial.class2);
    let chosen = null;
    const conf = trial.ask_confidence ? confidenceBlock(update) : null;
    const next = conf ? el("button", { type: "button", id: "next", disabled: true, onclick: finish }, gettext("Next")) : null;
    const buttons = sides.map((k, i) => el("button", {
      type: "button", class: "secondary choice-class", id: i === 0 ? "choose-f" : "choose-j",
      "data-class": k, "aria-pressed": "false", onclick: () => choose(k),
    }, interpolate(gettext("%(class)s (%(key)s)"), { class: name(k), key: i === 0 ? "F" : "J" }, true)));
    function choose(k) {
      chosen = k;
      buttons.forEach((b) => b.setAttribute("aria-pressed", Number(b.dataset.class) === k ? "true" : "false"));
      if (conf) update(); else finish();
    }
    function update() { if (next) next.disabled = chosen === null || !conf.touched; }
    function finish() {
      if (chosen === null || (conf && !conf.touched)) return;
      submit({ choice: chosen, swapped: Boolean(trial.swapped) }, conf ? conf.value() : null);
    }
    function onKey(ev) {
      if (!root.isConnected) { document.removeEventListener("keydown", onKey); return; }
      if (ev.target && ev.target.tagName === "TEXTAREA") return;
      if (ev.key === "f" || ev.key === "F") { choose(sides[0]); ev.preventDefault(); }
      if (ev.key === "j" || ev.key === "J") { choose(sides[1]); ev.preventDefault(); }
    }
    document.addEventListener("keydown", onKey);
    root.append(
      el("p", { class: "prompt" }, ...fill(gettext("This image blends a %(class1)s and a %(class2)s. Which does it show more of?"),
        { class1: el("strong", {}, trial.class1), class2: el("strong", {}, trial.class2) })),
      el("div", { class: "stage" }, el("img", { class: "stimulus pixelated", id: "stimulus", src: trial.image, alt: gettext("mixed image") })),
      el("div", { class: "nav-row" }, ...buttons),
      el("p", { class: "muted" }, conf
        ? gettext("Keys: F for the left answer, J for the right one; then set how sure you are and continue.")
        : gettext("Keys: F for the left answer, J for the right one.")),
    );
    if (conf) root.append(conf.node, el("div", { class: "nav-row" }, next));
  };
})();
