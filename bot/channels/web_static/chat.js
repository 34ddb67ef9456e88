/* The web chat's only script. It keeps the chat's token in this page's memory and nowhere
   else: no cookie, no localStorage, sessionStorage or IndexedDB, no service worker. The
   token travels in a header, never in a URL. Quick exit (the button, or Esc) ends the chat
   on the server, blanks the page and replaces it with an everyday site, so Back does not
   return here. Messages are shown with textContent: nothing a person writes becomes HTML. */
(function () {
  "use strict";

  var STALE_MS = 40000, POLL_MS = 5000;
  var root, log, scroller, status, box, send, token = null, after = 0, leaving = false;
  var shown = {}, polling = null, lastHeard = 0, streaming = false;

  function text(key) { return root.getAttribute("data-" + key) || ""; }

  // --- quick exit: the page leaves first; the server learns if it can --------------------
  function quickExit() {
    leaving = true;
    window.removeEventListener("beforeunload", warnReload);
    if (token && navigator.sendBeacon) {
      try { navigator.sendBeacon("/chat/api/exit", new Blob([token], { type: "text/plain" })); }
      catch (e) { /* offline: the server ends the chat on its own when it goes idle */ }
    }
    token = null;
    document.title = "";
    document.body.className = "blank";
    document.body.textContent = "";
    window.location.replace(text("exit"));
  }

  function warnReload(event) {
    if (!token || leaving) { return; }
    event.preventDefault();
    event.returnValue = "";  // the browser asks "Leave site?": a reload ends the chat
  }

  window.addEventListener("pagehide", function () {
    if (token && !leaving && navigator.sendBeacon) {
      navigator.sendBeacon("/chat/api/left", new Blob([token], { type: "text/plain" }));
    }
  });

  // --- showing messages ---------------------------------------------------------------------
  function add(kind, who, body) {
    var item = document.createElement("div");
    item.className = "msg " + kind;
    var name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    item.appendChild(name);
    var words = document.createElement("span");
    words.className = "text";
    words.textContent = body;
    item.appendChild(words);
    log.appendChild(item);
    // Just above the message box; a message taller than the view shows from its start.
    item.scrollIntoView({ block: item.offsetHeight > scroller.clientHeight ? "start" : "end" });
  }

  function replies(list) {
    var fresh = [];
    list.forEach(function (r) {
      if (shown[r.id]) { return; }
      shown[r.id] = true;
      after = Math.max(after, r.id);
      add(r.staff ? "theirs staff" : "theirs", r.staff ? text("staff") : text("us"), r.text);
      fresh.push(r.id);
    });
    if (fresh.length && token) {
      api("/chat/api/read", { ids: fresh }).catch(function () {});
    }
  }

  function ended() {
    token = null;
    status.textContent = text("ended");
    box.disabled = true;
    send.disabled = true;
    if (polling) { window.clearInterval(polling); polling = null; }
  }

  // --- talking to the server ----------------------------------------------------------------
  function api(path, body) {
    var headers = { "Content-Type": "application/json" };
    if (token) { headers["X-Chat-Token"] = token; }
    return fetch(path, { method: "POST", headers: headers, body: JSON.stringify(body),
                         credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer" });
  }

  function problem(response) {
    return response.json().then(function (data) {
      return data.message || text("offline");
    }, function () { return text("offline"); });
  }

  function start() {
    return api("/chat/api/session", { lang: text("lang") }).then(function (r) {
      if (!r.ok) { return problem(r).then(function (m) { throw new Error(m); }); }
      return r.json().then(function (data) {
        token = data.token;
        window.addEventListener("beforeunload", warnReload);
        listen();
        window.setInterval(watch, 5000);
      });
    });
  }

  function newId() {
    var bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  function submit(event) {
    event.preventDefault();
    var body = box.value.trim();
    if (!body || !box.validity.valid) { return; }
    send.disabled = true;
    status.textContent = "";
    var ready = token ? Promise.resolve() : start();
    ready.then(function () {
      var id = newId();
      return api("/chat/api/messages", { id: id, text: body, lang: text("lang") })
        .then(function (r) {
          if (r.status === 410 || r.status === 401) { ended(); return; }
          if (!r.ok) { return problem(r).then(function (m) { status.textContent = m; }); }
          add("mine", text("you"), body);
          box.value = "";
          return r.json().then(function (data) {
            // The database could not take it in time: the safety text comes straight back.
            if (data.fallback) { add("theirs", text("us"), data.fallback); }
          });
        });
    }).catch(function (err) {
      status.textContent = (err && err.message) || text("offline");
    }).then(function () { if (token !== null || !box.disabled) { send.disabled = false; } });
  }

  // --- the live feed: server-sent events read with fetch (a header, not the URL) -------------
  function listen() {
    if (!token || streaming || polling) { return; }
    if (!window.ReadableStream || !window.TextDecoder) { poll(); return; }
    streaming = true;
    lastHeard = Date.now();
    fetch("/chat/api/stream?after=" + after, {
      headers: { "X-Chat-Token": token, "Accept": "text/event-stream" },
      credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer"
    }).then(function (r) {
      if (r.status === 410 || r.status === 401) { ended(); return null; }
      if (!r.ok || !r.body) { throw new Error("stream"); }
      return read(r.body.getReader(), new TextDecoder(), "");
    }).catch(function () { /* dropped: watch() starts it again, or polls */ })
      .then(function () { streaming = false; });
  }

  function read(reader, decoder, buffer) {
    return reader.read().then(function (chunk) {
      if (chunk.done) { return null; }
      buffer += decoder.decode(chunk.value, { stream: true });
      var events = buffer.split("\n\n");
      buffer = events.pop();
      events.forEach(handle);
      return read(reader, decoder, buffer);
    });
  }

  function handle(raw) {
    var name = "message", data = "";
    raw.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) { name = line.slice(6).trim(); }
      else if (line.indexOf("data:") === 0) { data += line.slice(5).trim(); }
    });
    lastHeard = Date.now();
    if (name === "reply") {
      try { replies([JSON.parse(data)]); } catch (e) { /* a broken event: skip it */ }
    } else if (name === "ended") {
      ended();
    }
  }

  function poll() {
    if (polling || !token) { return; }
    var once = function () {
      if (!token) { return; }
      api("/chat/api/poll", { after: after }).then(function (r) {
        if (r.status === 410 || r.status === 401) { ended(); return null; }
        return r.ok ? r.json() : null;
      }).then(function (data) {
        if (!data) { return; }
        replies(data.replies || []);
        if (!data.open) { ended(); }
      }).catch(function () {});
    };
    polling = window.setInterval(once, POLL_MS);
    once();
  }

  function watch() {
    if (!token || polling) { return; }
    if (Date.now() - lastHeard > STALE_MS) { poll(); }  // a proxy holds the stream back
    else if (!streaming) { listen(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    root = document.getElementById("chat");
    log = document.getElementById("log");
    scroller = document.getElementById("scroll");
    status = document.getElementById("status");
    box = document.getElementById("message");
    send = document.getElementById("send");
    document.getElementById("quick-exit").addEventListener("click", quickExit);
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { quickExit(); }
    });
    document.getElementById("compose").addEventListener("submit", submit);
    box.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        document.getElementById("compose").requestSubmit();
      }
    });
  });
}());
