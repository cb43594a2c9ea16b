/* MarketFleet dashboard: live updates over server-sent events. No framework; htmx does the fragment swaps.
 *
 * <body data-live="/events/presence?…">      presence events move fleet rows and overview counts
 * <body data-alerts-live="/events/alerts?…">  alert events refresh every element with [data-refresh-on-alert]
 *                                             (and the overview's #panels) through htmx
 */
(function () {
  "use strict";
  const status = () => document.getElementById("live-status");

  function say(key) {
    const el = status();
    if (!el) return;
    el.textContent = el.dataset[key] || "";
    el.dataset.state = key;
    el.hidden = false;
  }

  function bump(key, delta) {
    document.querySelectorAll('[data-count="' + key + '"]').forEach(function (el) {
      el.textContent = String(Math.max(0, (parseInt(el.textContent, 10) || 0) + delta));
    });
  }

  function rate(scope) {
    const on = document.querySelector('[data-count="' + scope + '.online"]');
    const off = document.querySelector('[data-count="' + scope + '.offline"]');
    if (!on || !off) return;
    const a = parseInt(on.textContent, 10) || 0, b = parseInt(off.textContent, 10) || 0;
    const pct = a + b ? (100 * a) / (a + b) : 0;
    document.querySelectorAll('[data-rate="' + scope + '"]').forEach(function (el) {
      el.textContent = (scope === "total" ? pct.toFixed(1) : pct.toFixed(0)) + "%";
    });
  }

  function onPresence(ev) {
    const e = JSON.parse(ev.data);
    const table = document.querySelector("table.fleet");
    document.querySelectorAll('tr[data-device="' + CSS.escape(e.device_id) + '"]').forEach(function (row) {
      const was = row.classList.contains("online");
      row.classList.toggle("online", e.online);
      row.classList.toggle("offline", !e.online);
      row.classList.add("changed");
      const cell = row.querySelector("td.presence");
      if (cell && table) cell.textContent = e.online ? table.dataset.onlineText : table.dataset.offlineText;
      if (was === e.online) return;
    });
    // Overview counts: a device that changes state moves one count from one column to the other.
    const from = e.online ? "offline" : "online", to = e.online ? "online" : "offline";
    if (document.querySelector('[data-count="total.' + from + '"]')) {
      if ((parseInt(document.querySelector('[data-count="total.' + from + '"]').textContent, 10) || 0) > 0) {
        bump("total." + from, -1); bump("total." + to, 1); rate("total");
        bump("kind." + e.kind + "." + from, -1); bump("kind." + e.kind + "." + to, 1); rate("kind." + e.kind);
      }
    }
    const recent = document.getElementById("recent");
    if (recent) {
      if (recent.querySelector("li.muted")) recent.innerHTML = "";
      const li = document.createElement("li");
      li.className = e.online ? "ok" : "bad";
      const text = (e.online ? recent.dataset.wentOnline : recent.dataset.wentOffline).replace("{device}", e.device_id);
      li.textContent = new Date(e.at).toLocaleTimeString() + " " + text;
      recent.prepend(li);
      while (recent.children.length > 20) recent.lastElementChild.remove();
    }
  }

  function connect(url, handlers) {
    const source = new EventSource(url);
    source.addEventListener("open", function () { say("on"); });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) return; // 204: live updates are off here
      say("reconnecting");
    });
    source.addEventListener("overflow", function () { say("missed"); });
    Object.keys(handlers).forEach(function (name) { source.addEventListener(name, handlers[name]); });
    (window.mfLive = window.mfLive || []).push(source); // open streams, for diagnostics and tests
    return source;
  }

  let pending = null;
  function busy(el) {
    // Never swap a table under a person who is typing a comment or has a form open in it; try again later.
    return el.querySelector("details[open]") || (document.activeElement && el.contains(document.activeElement) &&
      /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName));
  }
  function schedule(delay) {
    // Several alert events in a burst cause one refresh. `window.mfRefreshPending` lets tests wait it out.
    if (pending) return;
    window.mfRefreshPending = true;
    pending = setTimeout(function () {
      pending = null;
      let deferred = false;
      document.querySelectorAll("[data-refresh-on-alert], #panels").forEach(function (el) {
        if (busy(el)) deferred = true;
        else if (window.htmx) window.htmx.trigger(el, "refresh");
      });
      if (deferred) schedule(2000);
      else window.mfRefreshPending = false;
    }, delay);
  }
  function refreshOnAlert() { schedule(250); }

  document.addEventListener("DOMContentLoaded", function () {
    const body = document.body;
    if (body.dataset.live) { say("connecting"); connect(body.dataset.live, { presence: onPresence }); }
    if (body.dataset.alertsLive) {
      connect(body.dataset.alertsLive, {
        "alert.opened": refreshOnAlert, "alert.updated": refreshOnAlert, "alert.acknowledged": refreshOnAlert,
        "alert.resolved": refreshOnAlert, "alert.assigned": refreshOnAlert, "alert.commented": refreshOnAlert,
        "alert.escalated": refreshOnAlert, alert: refreshOnAlert,
      });
    }
  });
})();
