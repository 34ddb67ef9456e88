/* The staff console's only script. Pages work without it; it adds live updates, the
   queue's sounds and tab title, the SMS segment counter, and "who has this open".
   No inline script anywhere (the CSP forbids it): everything hangs off data- attributes. */
(function () {
  "use strict";

  var STALE_MS = 40000;   // no event or ping for this long: the stream is not getting through
  var POLL_MS = 10000;    // then the page polls instead
  var PRESENCE_MS = 30000;

  // --- sound: made here with Web Audio, so no audio file is fetched -------------------------
  var audio = null;
  function soundOn() { return document.body.getAttribute("data-sound") === "on"; }
  function unlockAudio() {
    if (!audio && (window.AudioContext || window.webkitAudioContext)) {
      audio = new (window.AudioContext || window.webkitAudioContext)();
    }
    if (audio && audio.state === "suspended") { audio.resume(); }
  }
  document.addEventListener("click", unlockAudio, { once: false });
  document.addEventListener("keydown", unlockAudio, { once: false });
  function tone(freq, start, length) {
    var osc = audio.createOscillator(), gain = audio.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, audio.currentTime + start);
    gain.gain.exponentialRampToValueAtTime(0.25, audio.currentTime + start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + start + length);
    osc.connect(gain); gain.connect(audio.destination);
    osc.start(audio.currentTime + start); osc.stop(audio.currentTime + start + length + 0.05);
  }
  function chime(emergency) {
    if (!soundOn()) { return; }
    unlockAudio();
    if (!audio) { return; }
    if (emergency) {  // urgent: three high-low pulses
      for (var i = 0; i < 3; i++) { tone(988, i * 0.5, 0.2); tone(659, i * 0.5 + 0.22, 0.2); }
    } else {          // a new conversation: one soft two-note chime
      tone(523, 0, 0.18); tone(784, 0.2, 0.3);
    }
  }

  // --- the live stream, with polling as the fallback ------------------------------------------
  function live(onChange, onStatus) {
    var lastHeard = Date.now(), polling = null, source = null;
    function poll() {
      if (polling) { return; }
      if (source) { source.close(); source = null; }
      onStatus("Updates every 10 seconds.");
      polling = window.setInterval(function () { onChange(null); }, POLL_MS);
    }
    if (!window.EventSource) { poll(); return; }
    source = new EventSource("/console/events");
    var heard = function () { lastHeard = Date.now(); };
    source.addEventListener("ready", heard);
    source.addEventListener("ping", heard);
    source.addEventListener("change", function (e) {
      heard();
      var change = null;
      try { change = JSON.parse(e.data); } catch (err) { change = null; }
      onChange(change);
    });
    source.addEventListener("signed-out", function () {
      window.location.assign("/console/login?ended=idle");
    });
    window.setInterval(function () {
      if (!polling && (Date.now() - lastHeard > STALE_MS ||
          (source && source.readyState === EventSource.CLOSED))) { poll(); }
    }, 5000);
  }

  function fetchText(url) {  // a page of ours, or null; signed out: to the sign-in page
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401 || (r.redirected && r.url.indexOf("/console/login") !== -1)) {
          window.location.assign("/console/login?ended=idle");
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .catch(function () { return null; /* offline for a moment: the next try will do */ });
  }

  function fetchInto(url, target, after) {
    return fetchText(url).then(function (html) {
      if (html !== null && html !== undefined) {
        target.innerHTML = html;  // our own server-rendered, escaped fragment
        if (after) { after(); }
      }
    });
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      if (timer) { window.clearTimeout(timer); }
      timer = window.setTimeout(function () { timer = null; fn(); }, ms);
    };
  }

  // --- the queue ----------------------------------------------------------------------------
  function numbersIn(root) {
    var rows = root.querySelector("[data-numbers]");
    var found = {};
    if (!rows) { return found; }
    rows.getAttribute("data-numbers").split(" ").forEach(function (n) {
      if (n) { found[n.replace("!", "")] = n.indexOf("!") !== -1; }
    });
    return found;
  }
  function countsIn(root) {
    var rows = root.querySelector("[data-waiting]");
    return {
      waiting: rows ? parseInt(rows.getAttribute("data-waiting"), 10) || 0 : 0,
      emergencies: rows ? parseInt(rows.getAttribute("data-emergencies"), 10) || 0 : 0
    };
  }
  function setTitle(root) {
    var rows = root.querySelector("[data-waiting]");
    if (!rows) { return; }
    var waiting = parseInt(rows.getAttribute("data-waiting"), 10) || 0;
    var urgent = parseInt(rows.getAttribute("data-emergencies"), 10) || 0;
    var title = document.title.replace(/^\(.*?\)\s*/, "");
    var prefix = urgent ? "(" + urgent + " EMERGENCY) " : (waiting ? "(" + waiting + ") " : "");
    document.title = prefix + title;
    // The tabs' counts come with the rows, so all of them stay right, not only this tab's.
    ["waiting", "mine", "open", "emergencies"].forEach(function (key) {
      var count = document.querySelector('[data-count="' + key + '"]');
      var value = rows.getAttribute("data-" + key);
      if (count && value !== null) { count.textContent = value; }
    });
    var hot = document.querySelector('[data-count="emergencies"]');
    if (hot) { hot.classList.toggle("hot", urgent > 0); }
  }
  function queuePage(section) {
    var target = document.getElementById("queue-rows");
    var status = section.querySelector("[data-live-status]");
    var known = numbersIn(target), counted = countsIn(target);
    setTitle(target);
    var refresh = debounce(function () {
      fetchInto(section.getAttribute("data-rows"), target, function () {
        var now = numbersIn(target), fresh = false, urgent = false, counts = countsIn(target);
        Object.keys(now).forEach(function (n) {
          if (!(n in known)) { fresh = true; urgent = urgent || now[n]; }
          else if (now[n] && !known[n]) { urgent = true; }
        });
        // One that arrives beyond this page (a full tab) is not in its rows: the counts
        // still tell.
        if (counts.waiting > counted.waiting) { fresh = true; }
        if (counts.emergencies > counted.emergencies) { urgent = true; }
        if (fresh || urgent) { chime(urgent); }
        known = now;
        counted = counts;
        setTitle(target);
      });
    }, 250);
    live(function () { refresh(); }, function (text) { if (status) { status.textContent = text; } });
  }

  // --- a conversation -----------------------------------------------------------------------
  function conversationPage(section) {
    var number = section.getAttribute("data-number");
    var target = document.getElementById("history");
    var refresh = debounce(function () {
      if (target) { fetchInto(section.getAttribute("data-history"), target); }
    }, 250);
    live(function (change) {
      if (change === null || (change.kind === "conversation" && String(change.id) === number) ||
          change.kind === "resync") { refresh(); }
    }, function () {});
    var presence = section.getAttribute("data-presence");
    var tokenField = document.querySelector('input[name="csrf_token"]');
    if (presence && tokenField) {
      var beat = function () {
        var body = new URLSearchParams();
        body.set("csrf_token", tokenField.value);
        fetch(presence, { method: "POST", credentials: "same-origin", body: body })
          .catch(function () {});
      };
      window.setInterval(beat, PRESENCE_MS);
    }
  }

  // --- an emergency (or the list of them) ----------------------------------------------------
  // On a change to this escalation the page is read again and each [data-part] that differs
  // is swapped in, except one where someone is writing a note. Sweeps and delivery receipts
  // do not announce themselves on the stream, so the page also rereads every 30 seconds.
  var ESCALATION_MS = 30000;
  function busy(part) {
    var box = part.querySelector("textarea");
    return box !== null && (box.value !== "" || document.activeElement === box);
  }
  function escalationPage(section) {
    var number = section.getAttribute("data-number");  // empty on the list: any escalation
    var refresh = debounce(function () {
      fetchText(window.location.href).then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        Array.prototype.forEach.call(section.querySelectorAll("[data-part]"), function (part) {
          var next = fresh.querySelector('[data-part="' + part.getAttribute("data-part") + '"]');
          if (next && !busy(part) && next.innerHTML !== part.innerHTML) {
            part.innerHTML = next.innerHTML;  // our own server-rendered, escaped page
          }
        });
      });
    }, 250);
    live(function (change) {
      if (change === null || change.kind === "resync" ||
          (change.kind === "escalation" && (!number || String(change.id) === number))) {
        refresh();
      }
    }, function () {});
    window.setInterval(refresh, ESCALATION_MS);
  }

  // --- SMS segments: GSM-7 (160, or 153 a part) unless a character needs UCS-2 (70 / 67) -----
  var GSM = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
            "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var GSM_EXT = "\f^{}\\[~]|€";
  function segments(text) {
    var septets = 0, gsm = true;
    for (var i = 0; i < text.length; i++) {
      var ch = text.charAt(i);
      if (GSM.indexOf(ch) !== -1) { septets += 1; }
      else if (GSM_EXT.indexOf(ch) !== -1) { septets += 2; }
      else { gsm = false; break; }
    }
    if (gsm) {
      return { units: septets, parts: septets <= 160 ? 1 : Math.ceil(septets / 153), plain: true };
    }
    var units = text.length;  // UTF-16 code units, as UCS-2 counts them
    return { units: units, parts: units <= 70 ? 1 : Math.ceil(units / 67), plain: false };
  }
  function segmentCounter(box) {
    var out = document.getElementById(box.getAttribute("data-segments"));
    if (!out) { return; }
    var update = function () {
      var s = segments(box.value);
      out.textContent = box.value.length === 0 ? "" :
        s.units + (s.plain ? " characters, " : " characters (not plain text), ") +
        s.parts + (s.parts === 1 ? " SMS" : " SMS parts");
    };
    box.addEventListener("input", update);
    update();
  }

  // --- canned replies: choosing one puts it in the reply box at once (the form's button does
  // the same without JS, by reloading the page with it) ----------------------------------------
  function cannedPicker(select) {
    var box = document.getElementById(select.getAttribute("data-canned-into"));
    if (!box) { return; }
    select.addEventListener("change", function () {
      var option = select.options[select.selectedIndex];
      var body = option ? option.getAttribute("data-body") : null;
      if (body === null) { return; }
      box.value = body;
      box.dispatchEvent(new Event("input"));  // the segment counter
      box.focus();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var queue = document.querySelector('[data-live="queue"]');
    if (queue) { queuePage(queue); }
    var conversation = document.querySelector('[data-live="conversation"]');
    if (conversation) { conversationPage(conversation); }
    var emergency = document.querySelector('[data-live="escalation"]');
    if (emergency) { escalationPage(emergency); }
    Array.prototype.forEach.call(document.querySelectorAll("textarea[data-segments]"),
                                 segmentCounter);
    Array.prototype.forEach.call(document.querySelectorAll("select[data-canned-into]"),
                                 cannedPicker);
  });
}());
