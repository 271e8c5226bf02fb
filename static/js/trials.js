// The trial page: show the trial the page came with, save the answer the moment it is
// given (one idempotency key per answer, retried until the server has it); the
// save's reply carries the trial after it.
(function () {
  "use strict";
  const { el, keyGuard, renderers } = window.HillMix; // static/js/interfaces/common.js
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
        showConnection(gettext("We cannot reach the server right now. Your answer is kept and we keep trying — please stay on this page."));
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
  // An adaptive session's total is its maximum: it ends sooner when nothing is left to
  // learn from the participant, so the text must not promise a count.
  const totalIsMaximum = "totalIsMaximum" in cfg;
  function setProgress(done, total, showing) {
    if (progressText && showing !== undefined) {
      const text = totalIsMaximum ? gettext("Trial %(index)s of at most %(total)s") : gettext("Trial %(index)s of %(total)s");
      progressText.textContent = interpolate(text, { index: showing + 1, total }, true);
    }
    if (!progressBar) return;
    // A <progress> element: no inline style, which the page's CSP refuses.
    progressBar.max = Math.max(total, 1);
    progressBar.value = done;
  }

  // Which key presses may act on the trial (common.js): `guard.shownAt` is when the
  // trial on screen was shown, Infinity while none takes answers.
  const guard = keyGuard(app);

  // Show a rendered trial once its images are decoded and painted; resolves to the
  // moment they are on screen (performance.now()).
  async function reveal(root) {
    await Promise.all(Array.from(root.querySelectorAll("img"), (img) => img.decode()));
    root.classList.remove("loading");
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    guard.shownAt = performance.now();
    root.dataset.shown = "";
    return guard.shownAt;
  }

  // --- the loop --------------------------------------------------------------------
  let sessionToken = null;

  // After a refusal the next trial is fetched; after a saved answer it comes with
  // the save's reply.
  async function loadNext() {
    app.replaceChildren(el("p", { class: "muted", id: "trial-status" }, gettext("Loading…")));
    const { status, body } = await request(cfg.trialUrl, { method: "GET" });
    if (status !== 200) { fail(body.error || gettext("Something went wrong.")); return; }
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
    if (progressBar) progressBar.value = progressBar.max; // the trials are over, however many
    feedback.hidden = false;
    feedback.querySelector("textarea, button").focus();
  }

  async function showTrial(body) {
    sessionToken = body.session;
    if (body.done) { endTrials(); return; }
    const trial = body.trial;
    guard.shownAt = Infinity;
    setProgress(trial.index, trial.total, trial.index);
    const urls = trial.images ? trial.images.map((im) => im.url) : [trial.image];
    // The answered trial stays (inert) while the next one's images arrive, unless that is slow.
    const slow = setTimeout(() => app.replaceChildren(
      el("p", { class: "muted", id: "trial-status", role: "status" }, gettext("Loading the images…"))), 300);
    const failed = await loadImages(urls);
    clearTimeout(slow);
    if (failed) { imagesFailed(body, failed); return; }
    // Rendered unseen and inert (.loading) until its images are painted.
    const root = el("div", { class: "trial loading", "data-index": trial.index, "data-interface": trial.interface });
    const key = uuid4();
    let shown = null, startedAt = null;
    app.replaceChildren(root);
    renderers[trial.interface](trial, root, (response, confidence) => {
      if (shown === null || guard.shownAt !== shown) return; // not on screen yet, or answered
      guard.shownAt = Infinity;
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
        gettext("The images of this trial could not be loaded, so it cannot be answered yet. Please check your connection and try again. Nothing was saved for this trial.")),
      el("div", { class: "nav-row" },
        el("button", { type: "button", id: "retry-images", onclick: () => showTrial(body) }, gettext("Try again"))));
    fetch(cfg.imageFailureUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": cfg.csrf },
      body: JSON.stringify({ trial_index: body.trial.index, failed: count, attempts: IMAGE_ATTEMPTS }),
    }).catch(() => { /* the log is best effort; the participant's screen says it all */ });
  }

  async function save(trial, root, payload) {
    root.querySelectorAll("button, input, select, textarea").forEach((n) => { n.disabled = true; });
    root.append(el("p", { class: "muted", id: "saving" }, gettext("Saving…")));
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
      fail(body.error || interpolate(gettext("The answer was refused (%(status)s)."), { status }, true));
    }
  }

  function fail(message) {
    app.replaceChildren(el("p", { class: "error", role: "alert" }, message),
      el("button", { type: "button", onclick: loadNext }, gettext("Try again")));
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
