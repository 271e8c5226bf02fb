// What every interface's trial screen shares: the element builder, the one slider
// widget, the confidence block, the key guard, and the registry the interface modules add their
// renderer to (HillMix.renderers[interface] = function (trial, root, submit)). The
// trial page loads this, then its study's interface module (static/js/interfaces/),
// then trials.js, which runs the flow. Messages go through Django's JavaScript catalogue
// (gettext, interpolate), which the page loads first in the study's language.
(function () {
  "use strict";
  // A translated message with %(name)s placeholders as a list of text and nodes, for
  // el(): fill(gettext("A %(x)s here"), { x: el("strong", {}, "x") }).
  function fill(text, parts) {
    const out = [];
    let last = 0;
    text.replace(/%\((\w+)\)s/g, (match, name, offset) => {
      out.push(text.slice(last, offset), parts[name]);
      last = offset + match.length;
      return match;
    });
    out.push(text.slice(last));
    return out.filter((part) => part !== "");
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
    return node;
  }

  // --- the slider every interface answers on ---------------------------------------
  // Answered after any deliberate interaction: a pointer or touch on it, or a key that
  // moves a slider, even one that leaves it where it started (a person who sees 50/50
  // clicks 50). Focus alone is not an answer. The readout says what the value means.
  const SLIDER_KEYS = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End", "PageUp", "PageDown"]);
  function slider({ id, label, left, right, start = 50, readout, onTouch }) {
    const input = el("input", { type: "range", id, min: 0, max: 100, step: 1, value: start });
    const out = el("output", { for: id, id: `${id}-value`, class: "readout" });
    const state = { touched: false, start, input, value: () => Number(input.value) };
    function show() {
      out.textContent = readout(Number(input.value));
      input.setAttribute("aria-valuetext", out.textContent);
    }
    function touch() {
      state.touched = true;
      state.node.classList.add("touched");
      show();
      onTouch();
    }
    input.addEventListener("input", touch);
    input.addEventListener("pointerdown", touch);
    input.addEventListener("keydown", (ev) => { if (SLIDER_KEYS.has(ev.key)) touch(); });
    state.node = el("div", { class: "slider" }, el("label", { for: id }, label),
      el("div", { class: "slider-row" }, el("span", { class: "muted" }, left), input,
        el("span", { class: "muted" }, right)), out);
    show();
    return state;
  }

  function confidenceBlock(onChange) {
    return slider({ id: "confidence", label: gettext("How confident are you in your answer?"),
      left: gettext("not at all"), right: gettext("completely"),
      readout: (v) => interpolate(gettext("Confidence: %(value)s of 100"), { value: v }, true),
      onTouch: onChange });
  }

  // --- which key presses may act on the trial ---------------------------------------
  // A trial takes keys only from presses that began after it was on screen (its images
  // decoded and painted; the guard's `shownAt`, set by the page, on the clock of
  // event.timeStamp), and never from auto-repeat: a key held down on one trial must not
  // answer the next. Only holding an arrow key on a slider or typing in a field may repeat.
  function keyGuard(app) {
    const guard = { shownAt: Infinity };
    const heldSince = new Map(); // key -> timeStamp of the press that began holding it
    const keyId = (ev) => ev.code || ev.key;
    const isField = (t) => t && ["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName);
    function gated(ev) {
      const t = ev.target;
      return !app.hidden && (t === document.body || t === document.documentElement || app.contains(t));
    }
    function beganBeforeShown(ev) {
      const t = ev.target;
      const onTrial = !app.contains(t) || (t.closest && t.closest(".trial"));
      const since = heldSince.has(keyId(ev)) ? heldSince.get(keyId(ev)) : ev.timeStamp;
      return Boolean(onTrial) && (since < guard.shownAt || ev.timeStamp < guard.shownAt);
    }
    function swallow(ev) { ev.preventDefault(); ev.stopImmediatePropagation(); }
    window.addEventListener("keydown", (ev) => {
      if (!ev.repeat) heldSince.set(keyId(ev), ev.timeStamp); // a new press (a lost key-up too)
      if (!gated(ev)) return;
      const adjusting = isField(ev.target) && ev.key !== "Enter" && ev.key !== " ";
      if ((ev.repeat && !adjusting) || beganBeforeShown(ev)) swallow(ev);
    }, true);
    window.addEventListener("keyup", (ev) => {
      const early = gated(ev) && beganBeforeShown(ev); // e.g. Space, which clicks on release
      heldSince.delete(keyId(ev));
      if (early) swallow(ev);
    }, true);
    window.addEventListener("blur", () => heldSince.clear()); // its key-ups go elsewhere
    return guard;
  }

  window.HillMix = { el, fill, slider, confidenceBlock, keyGuard, renderers: {} };
})();
