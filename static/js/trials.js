// The trial page: show the trial the page came with, save the answer the moment it is
// given (one idempotency key per answer, retried until the server has it); the
// save's reply carries the trial after it.
(function () {
  "use strict";
  const app = document.getElementById("trial-app");
  const banner = document.getElementById("connection");
  const cfg = app.dataset;
  const progressBar = document.querySelector("progress.progress");

  function uuid4() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
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

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function showConnection(text) {
    banner.hidden = !text;
    banner.textContent = text || "";
  }

  // Retries network errors, 5xx and 429 with backoff, forever: the answer is kept
  // in memory until the server confirms it. Other 4xx come back to the caller.
  async function request(url, options) {
    let delay = 500;
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
        if (res.status < 500 && res.status !== 429) {
          showConnection("");
          const body = await res.json().catch(() => ({}));
          return { status: res.status, body };
        }
      } catch (err) { /* network error: retry */ }
      if (attempt >= 2) {
        showConnection("We cannot reach the server right now. Your answer is kept and we keep trying — please stay on this page.");
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 8000);
    }
  }

  // A trial is shown only once every image of it is decoded: a failed image is tried
  // IMAGE_ATTEMPTS times in all. Resolves to how many images failed (0: all decoded).
  // The decoded images stay referenced while their trial is up, so the page's <img>
  // elements (and Construct's steps) take them from memory.
  const IMAGE_ATTEMPTS = 3;
  let trialImages = [];
  async function loadImages(urls) {
    const wanted = Array.from(new Set(urls));
    const decoded = new Map();
    for (let attempt = 1; attempt <= IMAGE_ATTEMPTS; attempt++) {
      await Promise.all(wanted.filter((url) => !decoded.has(url)).map((url) => {
        const img = new Image();
        img.src = url;
        return img.decode().then(() => decoded.set(url, img), () => null);
      }));
      if (decoded.size === wanted.length) break;
      if (attempt < IMAGE_ATTEMPTS) await sleep(400 * attempt);
    }
    trialImages = Array.from(decoded.values());
    return wanted.length - decoded.size;
  }

  const progressText = document.getElementById("progress-text");
  function setProgress(done, total, showing) {
    if (progressText && showing !== undefined) progressText.textContent = `Trial ${showing + 1} of ${total}`;
    if (!progressBar) return;
    // A <progress> element: no inline style, which the page's CSP refuses.
    progressBar.max = Math.max(total, 1);
    progressBar.value = done;
  }

  // --- which key presses may act on the trial ---------------------------------------
  // A trial takes keys only from presses that began after it was on screen (its images
  // decoded and painted; `shownAt`, on the clock of event.timeStamp), and never from
  // auto-repeat: a key held down on one trial must not answer the next. Only holding an
  // arrow key on a slider or typing in a field may repeat.
  let shownAt = Infinity;
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
    return Boolean(onTrial) && (since < shownAt || ev.timeStamp < shownAt);
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

  // Show a rendered trial once its images are decoded and painted; resolves to the
  // moment they are on screen (performance.now()).
  async function reveal(root) {
    await Promise.all(Array.from(root.querySelectorAll("img"), (img) => img.decode()));
    root.classList.remove("loading");
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    shownAt = performance.now();
    root.dataset.shown = "";
    return shownAt;
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
    return slider({ id: "confidence", label: "How confident are you in your answer?", left: "not at all",
      right: "completely", readout: (v) => `Confidence: ${v} of 100`, onTouch: onChange });
  }

  // --- interfaces ----------------------------------------------------------------
  const renderers = {};

  renderers.construct = function (trial, root, submit) {
    // The grid in step order; the page knows steps, never lams.
    const last = trial.images.length - 1;
    let at = trial.start_step;
    const steps = [at];
    const img = el("img", { class: "stimulus pixelated", id: "stimulus", alt: "mixed image" });
    const conf = trial.ask_confidence ? confidenceBlock(update) : null;
    const next = el("button", { type: "button", id: "continue", onclick: finish }, "Continue");
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
      el("p", { class: "prompt" }, "Imagine 100 other people looking at this image. Change it until you think ",
        el("strong", {}, "half of them"), ` would say it shows a ${trial.class1} and half a ${trial.class2}.`),
      el("div", { class: "stage" }, img),
      el("div", { class: "nav-row" },
        el("button", { type: "button", class: "secondary", id: "toward-2", onclick: () => step(-1) },
          `◀ more ${trial.class2} (G)`),
        el("button", { type: "button", class: "secondary", id: "toward-1", onclick: () => step(+1) },
          `more ${trial.class1} (H) ▶`)),
      el("p", { class: "muted" }, "Keys: G and H change the image; Enter or the button continues."),
    );
    if (conf) root.append(conf.node);
    root.append(el("div", { class: "nav-row" }, next));
    show(); update();
    (conf ? conf.node.querySelector("input") : next).focus();
  };

  renderers.select_shuffled = function (trial, root, submit) {
    let chosen = null;
    const conf = trial.ask_confidence ? confidenceBlock(update) : null;
    const next = el("button", { type: "button", id: "next", disabled: true, onclick: finish }, "Next");
    const buttons = trial.images.map((im, i) => el("button", {
      type: "button", class: "choice", "data-choice": im.choice, "aria-pressed": "false",
      "aria-label": `image ${i + 1}`, onclick: () => choose(i),
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
      el("p", { class: "prompt" }, "Imagine 100 other people looking at these images. Click the one you think ",
        el("strong", {}, "half of them"), ` would call a ${trial.class1} and half a ${trial.class2}.`),
      el("div", { class: "choice-grid" }, ...buttons),
    );
    if (conf) root.append(conf.node);
    root.append(el("div", { class: "nav-row" }, next));
  };

  renderers.infer = function (trial, root, submit) {
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

  renderers.soft_label = function (trial, root, submit) {
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

  // --- the loop --------------------------------------------------------------------
  let sessionToken = null;

  // After a refusal the next trial is fetched; after a saved answer it comes with
  // the save's reply.
  async function loadNext() {
    app.replaceChildren(el("p", { class: "muted", id: "trial-status" }, "Loading…"));
    const { status, body } = await request(cfg.trialUrl, { method: "GET" });
    if (status !== 200) { fail(body.error || "Something went wrong."); return; }
    showTrial(body);
  }

  // After the last answer: the feedback questions this page carries, else the study's
  // address (the completion page).
  function endTrials() {
    const feedback = document.getElementById("feedback-step");
    if (!feedback) { window.location.assign(cfg.studyUrl); return; }
    app.replaceChildren();
    app.hidden = true;
    if (progressText) progressText.hidden = true;
    feedback.hidden = false;
    feedback.querySelector("textarea, button").focus();
  }

  async function showTrial(body) {
    sessionToken = body.session;
    if (body.done) { endTrials(); return; }
    const trial = body.trial;
    shownAt = Infinity;
    setProgress(trial.index, trial.total, trial.index);
    const urls = trial.images ? trial.images.map((im) => im.url) : [trial.image];
    // The answered trial stays (inert) while the next one's images arrive, unless that is slow.
    const slow = setTimeout(() => app.replaceChildren(
      el("p", { class: "muted", id: "trial-status", role: "status" }, "Loading the images…")), 300);
    const failed = await loadImages(urls);
    clearTimeout(slow);
    if (failed) { imagesFailed(body, failed); return; }
    // Rendered unseen and inert (.loading) until its images are painted.
    const root = el("div", { class: "trial loading", "data-index": trial.index, "data-interface": trial.interface });
    const key = uuid4();
    let shown = null, startedAt = null;
    app.replaceChildren(root);
    renderers[trial.interface](trial, root, (response, confidence) => {
      if (shown === null || shownAt !== shown) return; // not on screen yet, or answered
      shownAt = Infinity;
      save(trial, root, {
        session: sessionToken, trial_index: trial.index, idempotency_key: key,
        rt_ms: Math.max(performance.now() - shown, 0.001), client_started_at: startedAt,
        client_answered_at: Date.now(), confidence, response,
      });
    });
    try {
      shown = await reveal(root);
    } catch (err) { // an image that decoded a moment ago could not be drawn
      imagesFailed(body, 1);
      return;
    }
    startedAt = Math.round(Date.now() - (performance.now() - shown));
  }

  // Images that would not load after retries: the trial cannot be answered. Say so,
  // tell the researcher, and let the participant try again.
  function imagesFailed(body, count) {
    app.replaceChildren(
      el("p", { class: "error", id: "image-error", role: "alert" },
        "The images of this trial could not be loaded, so it cannot be answered yet. ",
        "Please check your connection and try again. Nothing was saved for this trial."),
      el("div", { class: "nav-row" },
        el("button", { type: "button", id: "retry-images", onclick: () => showTrial(body) }, "Try again")));
    fetch(cfg.imageFailureUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": cfg.csrf },
      body: JSON.stringify({ trial_index: body.trial.index, failed: count, attempts: IMAGE_ATTEMPTS }),
    }).catch(() => { /* the log is best effort; the participant's screen says it all */ });
  }

  async function save(trial, root, payload) {
    root.querySelectorAll("button, input, select, textarea").forEach((n) => { n.disabled = true; });
    root.append(el("p", { class: "muted", id: "saving" }, "Saving…"));
    const { status, body } = await request(cfg.saveUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": cfg.csrf },
      body: JSON.stringify(payload),
    });
    if (status === 200 || status === 201) {
      setProgress(trial.index + 1, trial.total);
      showTrial(body);
    } else if (status === 409) {
      loadNext(); // the server knows better which trial is next
    } else {
      fail(body.error || `The answer was refused (${status}).`);
    }
  }

  function fail(message) {
    app.replaceChildren(el("p", { class: "error", role: "alert" }, message),
      el("button", { type: "button", onclick: loadNext }, "Try again"));
  }

  // Enter continues when no button has focus (Construct from the keyboard alone).
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || (ev.target && ["BUTTON", "TEXTAREA", "A"].includes(ev.target.tagName))) return;
    const next = document.querySelector("#continue, #next");
    if (next && !next.disabled) { ev.preventDefault(); next.click(); }
  });

  // The page arrives with its first trial; fetched only when it did not.
  const first = document.getElementById("first-trial");
  if (first) showTrial(JSON.parse(first.textContent)); else loadNext();
})();
