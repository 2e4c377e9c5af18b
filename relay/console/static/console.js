// Crisis console: live updates (Server-Sent Events), FLASH alert, compose estimate and preview.
// Served by the node itself; no other origin is ever contacted (see the Content-Security-Policy).
"use strict";
(function () {
  const MARKER = "OEFENING / EXERCISE";
  const banner = document.getElementById("exercise-banner");
  const alertBox = document.getElementById("flash-alert");
  const seenFlash = new Set();
  let firstUpdate = true;

  function setExercise(on, title) {
    if (banner) banner.hidden = !on;
    if (title) document.title = title;
  }

  function beep() {
    const box = document.getElementById("sound");
    if (!box || !box.checked) return;
    try {
      const ctx = new (window.AudioContext || window.webkitAudioContext)();
      const osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.6);
    } catch (e) { /* no audio device: the visible alert stays */ }
  }

  function checkFlash(root) {
    const fresh = [];
    root.querySelectorAll("[data-flash-id]").forEach(function (el) {
      const id = el.getAttribute("data-flash-id");
      if (!seenFlash.has(id)) { seenFlash.add(id); fresh.push(el.getAttribute("data-flash-text")); }
    });
    if (!firstUpdate && fresh.length && alertBox) {
      document.getElementById("flash-text").textContent = fresh.join(" · ");
      alertBox.hidden = false;
      beep();
    }
    firstUpdate = false;
  }

  const sound = document.getElementById("sound");
  if (sound) {
    sound.checked = localStorage.getItem("relay-sound") === "1";
    sound.addEventListener("change", function () {
      localStorage.setItem("relay-sound", sound.checked ? "1" : "0");
    });
  }
  const dismiss = document.getElementById("flash-dismiss");
  if (dismiss) dismiss.addEventListener("click", function () { alertBox.hidden = true; });

  const main = document.querySelector("main[data-live]");
  const live = document.getElementById("live");
  if (main && live) {
    checkFlash(live);
    const source = new EventSource(main.getAttribute("data-live"));
    source.addEventListener("update", function (ev) {
      live.innerHTML = ev.data;
      const root = live.firstElementChild;
      if (root && root.getAttribute("data-title")) {
        setExercise(root.getAttribute("data-exercise") === "1", root.getAttribute("data-title"));
      }
      checkFlash(live);
      document.body.setAttribute("data-updated", String(Date.now()));
    });
  }

  const form = document.getElementById("compose");
  if (form) {
    const estimate = document.getElementById("estimate");
    const preview = document.getElementById("preview");
    const base = document.body.getAttribute("data-base-title");
    let timer = null;
    let pending = 0;
    function update() {
      const body = new FormData(form);
      body.delete("password");
      const mine = ++pending;
      fetch(form.getAttribute("data-estimate"), {
        method: "POST", body: body, credentials: "same-origin",
        headers: { "X-CSRF-Token": body.get("csrf") }
      }).then(function (r) { return r.json(); }).then(function (j) {
        if (mine !== pending) return;
        estimate.textContent = j.estimate;
        estimate.className = "estimate " + (j.ok ? (j.frames === 1 ? "ok" : "warn") : "error");
        preview.innerHTML = j.preview;
        setExercise(j.exercise, j.exercise ? MARKER + " — " + base : base);
      }).catch(function () { estimate.textContent = "—"; });
    }
    form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(update, 200); });
    form.addEventListener("change", update);
    update();
  }

  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
})();
