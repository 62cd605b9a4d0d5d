// The in-car alert page: alerts arrive by Server-Sent Events and are built with textContent only (every field
// is hostile input); outcomes are posted with the session's CSRF token.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const outcomes = document.querySelector('meta[name="outcomes"]').content.split(" ").filter(Boolean);
  const list = document.getElementById("alerts");
  const empty = document.getElementById("empty");
  const conn = document.getElementById("conn");
  const soundButton = document.getElementById("sound");
  const shown = new Map();
  let audio = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // --- sound: a Web Audio beep (browsers start audio only after a click on the page, hence the button) ---
  function audioContext() {
    if (!audio && (window.AudioContext || window.webkitAudioContext)) {
      audio = new (window.AudioContext || window.webkitAudioContext)();
    }
    return audio;
  }
  function showSoundButton() {
    const ctx = audioContext();
    soundButton.hidden = !ctx || ctx.state === "running";
  }
  soundButton.addEventListener("click", function () {
    const ctx = audioContext();
    if (ctx) ctx.resume().then(showSoundButton);
  });
  function beep() {
    const ctx = audioContext();
    if (!ctx) return;
    if (ctx.state !== "running") {
      ctx.resume().catch(function () {});
    }
    const t = ctx.currentTime;
    [0, 0.35].forEach(function (offset) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.setValueAtTime(880, t + offset);
      osc.frequency.setValueAtTime(660, t + offset + 0.15);
      gain.gain.setValueAtTime(0.25, t + offset);
      osc.connect(gain);
      gain.connect(ctx.destination);
      osc.start(t + offset);
      osc.stop(t + offset + 0.3);
    });
    document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
    document.body.dataset.audio = ctx.state;
    showSoundButton();
  }

  // --- formatting ---
  function age(seconds) {
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " days";
  }
  function when(epoch) {
    return new Date(epoch * 1000).toLocaleString();
  }
  function position(fix) {
    if (!fix || fix.source === "none" || fix.lat === null || fix.lon === null) return "no GPS fix";
    let text = fix.lat.toFixed(5) + ", " + fix.lon.toFixed(5);
    if (fix.eph_m !== null) text += " (±" + Math.round(fix.eph_m) + " m)";
    if (fix.source === "fixed") text += ", fixed position";
    else if (fix.age_s !== null) text += ", fix " + fix.age_s.toFixed(1) + " s old";
    return text;
  }
  function label(outcome) {
    const words = outcome.replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }
  function recordedText(o) {
    return "Recorded: " + label(o.outcome) + " by " + o.officer + " at " + new Date(o.at * 1000).toLocaleTimeString();
  }

  // --- one alert ---
  function image(url, cls, alt, caption) {
    const fig = el("figure", cls);
    if (url) {
      const img = el("img");
      img.src = url;
      img.alt = alt;
      fig.appendChild(img);
    } else {
      fig.appendChild(el("div", "no-image", "no scene image (disk was full)"));
    }
    fig.appendChild(el("figcaption", null, caption));
    return fig;
  }
  function detail(dl, term, value) {
    dl.appendChild(el("dt", null, term));
    dl.appendChild(el("dd", null, value));
  }
  function outcomeControls(a, article) {
    const box = el("div", "outcome");
    const note = el("input", "note");
    note.type = "text";
    note.maxLength = 2000;
    note.placeholder = "note (optional)";
    const status = el("span", "outcome-status");
    if (a.outcome) {
      status.textContent = recordedText(a.outcome);
      article.classList.add("recorded");
    }
    outcomes.forEach(function (outcome) {
      const b = el("button", "outcome-button", label(outcome));
      b.type = "button";
      b.dataset.outcome = outcome;
      b.addEventListener("click", function () {
        record(a.uuid, outcome, note, status, article, box);
      });
      box.appendChild(b);
    });
    box.appendChild(note);
    box.appendChild(status);
    return box;
  }
  function record(uuid, outcome, note, status, article, box) {
    const buttons = box.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    status.className = "outcome-status";
    status.textContent = "recording…";
    const body = new URLSearchParams({ hit: uuid, outcome: outcome, note: note.value });
    fetch("/outcome", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf },
      body: body,
    })
      .then(function (r) {
        if (r.status === 401) {
          location.assign("/login");
          throw new Error("logged out");
        }
        return r.json().then(function (doc) {
          if (!r.ok) throw new Error(doc.error || "HTTP " + r.status);
          return doc;
        });
      })
      .then(function (doc) {
        status.textContent = recordedText(doc);
        article.classList.add("recorded");
        note.value = "";
      })
      .catch(function (e) {
        status.className = "outcome-status failed";
        status.textContent = "Not recorded: " + e.message;
      })
      .finally(function () {
        buttons.forEach(function (b) { b.disabled = false; });
      });
  }
  function render(a) {
    const article = el("article", "alert");
    article.id = "alert-" + a.uuid;
    article.dataset.uuid = a.uuid;
    if (a.list_stale) article.appendChild(el("div", "stale-banner", "HOT LIST STALE"));
    if (a.instructions) article.appendChild(el("div", "instructions", "INSTRUCTIONS: " + a.instructions));
    else article.appendChild(el("div", "instructions none", "No instructions on the list entry."));
    article.appendChild(el("div", "reason", a.reason + " (" + a.list_code + ")"));
    const evidence = el("div", "evidence");
    evidence.appendChild(image(a.crop_url, "crop", "captured plate",
      "Read " + a.read_text + " (" + Math.round(a.read_confidence * 100) + "%)"));
    const wanted = el("figure", "wanted");
    wanted.appendChild(el("div", "wanted-plate", a.wanted_plate));
    wanted.appendChild(el("figcaption", null, "Wanted plate" + (a.wanted_state ? " (" + a.wanted_state + ")" : "")));
    evidence.appendChild(wanted);
    evidence.appendChild(image(a.scene_url, "scene", "scene", "Scene"));
    article.appendChild(evidence);
    const dl = el("dl", "details");
    detail(dl, "Match", a.explanation);
    detail(dl, "List", a.list_id + " version " + a.list_version + ", " + age(a.list_age_s) + " old" +
      (a.list_stale ? " (STALE)" : ""));
    if (a.case_number) detail(dl, "Case", a.case_number);
    if (a.vehicle_description) detail(dl, "Vehicle", a.vehicle_description);
    if (a.synopsis) detail(dl, "Synopsis", a.synopsis);
    if (a.requesting_officer) detail(dl, "Requested by", a.requesting_officer);
    if (a.entered_by) detail(dl, "Entered by", a.entered_by);
    detail(dl, "Time", when(a.seen_at));
    detail(dl, "Camera", a.camera_id);
    detail(dl, "Position", position(a.fix));
    article.appendChild(dl);
    article.appendChild(outcomeControls(a, article));
    return article;
  }
  function add(a) {
    if (shown.has(a.uuid)) return; // a reconnect replays the recent alerts
    const article = render(a);
    shown.set(a.uuid, article);
    if (empty) empty.hidden = true;
    list.insertBefore(article, list.firstChild);
    if (!a.outcome) beep();
  }

  // --- the live stream ---
  const events = new EventSource("/events");
  events.addEventListener("open", function () {
    conn.textContent = "live";
    conn.className = "conn live";
  });
  events.addEventListener("error", function () {
    if (events.readyState === EventSource.CLOSED) {
      location.assign("/login"); // the session ended (or the unit restarted): log in again
    } else {
      conn.textContent = "reconnecting…";
      conn.className = "conn";
    }
  });
  events.addEventListener("alert", function (e) {
    add(JSON.parse(e.data));
  });
  events.addEventListener("logout", function () {
    events.close();
    location.assign("/login");
  });
  showSoundButton();
})();
