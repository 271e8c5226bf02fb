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

  function preload(urls) {
    return Promise.all(urls.map((url) => new Promise((resolve) => {
      const img = new Image();
      img.onload = img.onerror = () => resolve(img);
      img.src = url;
    })));
  }

  function setProgress(done, total) {
    if (!progressBar) return;
    // A <progress> element: no inline style, which the page's CSP refuses.
    progressBar.max = Math.max(total, 1);
    progressBar.value = done;
  }

  // --- confidence slider shared by the interfaces -------------------------------
  function confidenceBlock(onChange) {
    const out = el("output", { for: "confidence" }, "50");
    const input = el("input", { type: "range", id: "confidence", min: 0, max: 100, step: 1, value: 50,
      "aria-label": "Confidence from 0 to 100" });
    const state = { touched: false, value: () => Number(input.value) };
    input.addEventListener("input", () => { state.touched = true; out.textContent = input.value; onChange(); });
    state.node = el("div", { class: "confidence" },
      el("label", { for: "confidence" }, "How confident are you in your answer? "),
      el("div", { class: "slider-row" }, el("span", { class: "muted" }, "not at all"), input,
        el("span", { class: "muted" }, "completely"), out));
    return state;
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

  function slider(id, label, left, right, onTouch) {
    const out = el("output", { for: id }, "50");
    const input = el("input", { type: "range", id, min: 0, max: 100, step: 1, value: 50, "aria-label": label });
    const state = { touched: false, value: () => Number(input.value), input };
    input.addEventListener("input", () => { state.touched = true; out.textContent = input.value; onTouch(); });
    state.node = el("div", { class: "confidence" }, el("label", { for: id }, label),
      el("div", { class: "slider-row" }, el("span", { class: "muted" }, left), input,
        el("span", { class: "muted" }, right), out));
    return state;
  }

  renderers.infer = function (trial, root, submit) {
    const message = el("p", { class: "error", id: "ask-move", role: "alert", hidden: true });
    const mix = slider("mixing", `What share of 100 people would say ${trial.class1} vs ${trial.class2}?`,
      `100% ${trial.class1}`, `100% ${trial.class2}`, () => { message.hidden = true; });
    const conf = slider("confidence", "How confident are you in your answer?", "not at all", "completely",
      () => { message.hidden = true; });
    const next = el("button", { type: "button", id: "next", onclick: finish }, "Next");
    function finish() {
      const missing = [!mix.touched && "the first slider", !conf.touched && "the confidence slider"].filter(Boolean);
      if (missing.length) {
        message.textContent = `Please move ${missing.join(" and ")} to give your answer.`;
        message.hidden = false;
        return;
      }
      submit({ slider: mix.value(), confidence: conf.value(), slider_touched: true, confidence_touched: true }, null);
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
    feedback.hidden = false;
    feedback.querySelector("textarea, button").focus();
  }

  async function showTrial(body) {
    sessionToken = body.session;
    if (body.done) { endTrials(); return; }
    const trial = body.trial;
    setProgress(trial.index, trial.total);
    const urls = trial.images ? trial.images.map((im) => im.url) : [trial.image];
    await preload(urls);
    const root = el("div", { class: "trial", "data-index": trial.index, "data-interface": trial.interface });
    const key = uuid4();
    const started = performance.now();
    const startedAt = Date.now();
    app.replaceChildren(root);
    renderers[trial.interface](trial, root, (response, confidence) => save(trial, root, {
      session: sessionToken, trial_index: trial.index, idempotency_key: key,
      rt_ms: Math.max(performance.now() - started, 0.001), client_started_at: startedAt,
      client_answered_at: Date.now(), confidence, response,
    }));
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
