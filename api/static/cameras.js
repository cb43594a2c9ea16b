/* Cameras: snapshot placeholders, the line and zone editor drawn over a camera's picture, the passenger-flow chart.
 *
 * Grid (/cameras): <figure class="snapshot"> whose <img> fails shows its placeholder (data-state="unreachable");
 *                 the pictures are refreshed every 10 s.
 * Both follow the cameras' presence live (the "presence" events of the stream app.js opens from body[data-live]).
 * Camera page (/cameras/{id}):
 *   #editor       the picture (fetched from data-snapshot-url; a 503 answer's reason is shown on the placeholder)
 *                 with an SVG overlay. Lines: two clicks (start, end); zones: three or more clicks. Points are
 *                 fractions of the picture (0..1, origin top left), what vision.config.CameraAnalytics expects.
 *                 Save PUTs the whole analytics object to data-save-url (the vision API, with the session cookie),
 *                 so settings the editor does not show (sample_fps, rules of a zone, a line's flow_device) stay.
 *   #flow-chart   in/out per hour (24 h, 7 d) or day (30 d) from GET /api/v1/vision/cameras/{id}/flow, drawn by
 *                 uPlot like the device chart.
 */
(function () {
  "use strict";

  // ------------------------------------------------------------ grid placeholders
  function watchSnapshot(figure) {
    const img = figure.querySelector("img");
    if (!img) return;
    const set = function (state) { figure.dataset.state = state; };
    img.addEventListener("load", function () { set("ok"); });
    img.addEventListener("error", function () { set("unreachable"); });
    if (img.complete) set(img.naturalWidth ? "ok" : "unreachable"); // settled before this script ran
  }

  // The grid's pictures follow the cameras: a fresh one every REFRESH_MS while the page is in view (the platform
  // keeps each picture 2 s, so many open grids still cost a camera one request per refresh).
  const REFRESH_MS = 10000;
  function refreshGrid() {
    if (document.hidden) return;
    document.querySelectorAll("figure.snapshot img").forEach(function (img) {
      img.src = img.src.split("?")[0] + "?t=" + Date.now();
    });
  }

  // A camera's presence is its worker's MQTT link: follow the page's /events/presence stream (opened by app.js).
  function onPresence(ev) {
    const e = JSON.parse(ev.data);
    document.querySelectorAll('[data-presence-of="' + CSS.escape(e.device_id) + '"]').forEach(function (span) {
      span.textContent = e.online ? span.dataset.onlineText : span.dataset.offlineText;
      span.classList.toggle("ok", e.online);
      span.classList.toggle("bad", !e.online);
      const tile = span.closest("article[data-camera]");
      if (tile) { tile.classList.toggle("online", e.online); tile.classList.toggle("offline", !e.online); }
    });
  }

  // ------------------------------------------------------------ editor
  const SVG = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) node.textContent = text;
    return node;
  }

  function round(v) { return Math.round(v * 10000) / 10000; }

  // Only what can be drawn: a configuration written around the API (straight into the table) may hold anything.
  function isPoint(p) { return Array.isArray(p) && p.length === 2 && isFinite(p[0]) && isFinite(p[1]); }
  function drawableLines(a) { return (a.lines || []).filter(function (l) { return l && isPoint(l.start) && isPoint(l.end); }); }
  function drawableZones(a) {
    return (a.zones || []).filter(function (z) { return z && Array.isArray(z.polygon) && z.polygon.length && z.polygon.every(isPoint); });
  }

  function Editor(root) {
    this.root = root;
    this.text = function (key, values) {
      let s = root.dataset["text" + key] || key;
      Object.keys(values || {}).forEach(function (k) { s = s.split("{" + k + "}").join(values[k]); });
      return s;
    };
    this.mayEdit = root.dataset.mayEdit === "1";
    this.analytics = JSON.parse(document.getElementById("analytics-data").textContent || "{}") || {};
    this.analytics.lines = this.analytics.lines || [];
    this.analytics.zones = this.analytics.zones || [];
    this.draft = [];
    this.dirty = false;
    this.frame = document.getElementById("frame");
    this.picture = this.frame.querySelector(".picture");
    this.img = document.getElementById("snapshot");
    this.svg = document.getElementById("overlay");
    this.status = document.getElementById("editor-status");
    this.objectUrl = null;
  }

  Editor.prototype.say = function (message, kind) {
    this.status.textContent = message;
    this.status.className = kind || "";
    this.status.dataset.kind = kind || "info";
  };

  Editor.prototype.tool = function () {
    const checked = this.root.querySelector('input[name="tool"]:checked');
    return checked ? checked.value : "line";
  };

  Editor.prototype.loadSnapshot = async function () {
    const self = this;
    self.picture.dataset.state = "loading";
    let reason = "";
    try {
      const response = await fetch(self.root.dataset.snapshotUrl + "?t=" + Date.now(), { credentials: "same-origin" });
      if (response.ok) {
        const blob = await response.blob();
        if (self.objectUrl) URL.revokeObjectURL(self.objectUrl);
        self.objectUrl = URL.createObjectURL(blob);
        await new Promise(function (resolve) {
          self.img.onload = resolve;
          self.img.onerror = resolve;
          self.img.src = self.objectUrl;
        });
        if (self.img.naturalWidth) {
          self.picture.dataset.state = "ok";
          self.draw();
          return;
        }
      } else {
        const body = await response.json().catch(function () { return {}; });
        reason = body.detail || ("HTTP " + response.status);
      }
    } catch (err) {
      reason = String(err);
    }
    // No picture: the editor still works on a 4:3 placeholder (points are fractions either way).
    self.picture.dataset.state = "unreachable";
    document.getElementById("snapshot-problem").textContent =
      self.root.dataset.textUnreachable + (reason ? " (" + reason + ")" : "");
    self.draw();
  };

  // Fraction of the picture under a click; outside the picture gives values outside 0..1.
  Editor.prototype.pointOf = function (event) {
    const box = (this.picture.dataset.state === "ok" ? this.img : this.picture).getBoundingClientRect();
    return [(event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height];
  };

  Editor.prototype.click = function (event) {
    if (!this.mayEdit || event.target.closest("button, input, label")) return;
    const p = this.pointOf(event);
    if (p[0] < 0 || p[0] > 1 || p[1] < 0 || p[1] > 1) {
      this.say(this.text("Outside"), "error");
      return;
    }
    if (this.tool() === "line" && this.draft.length >= 2) {
      this.say(this.text("LineFull"), "error");
      return;
    }
    this.draft.push([round(p[0]), round(p[1])]);
    this.say("", "");
    this.draw();
  };

  Editor.prototype.add = function () {
    const nameInput = document.getElementById("shape-name");
    const name = nameInput.value.trim();
    const line = this.tool() === "line";
    if (line && this.draft.length !== 2) return this.say(this.text("LinePoints"), "error");
    if (!line && this.draft.length < 3) return this.say(this.text("ZonePoints"), "error");
    if (!name) return this.say(this.text("NoName"), "error");
    const list = line ? this.analytics.lines : this.analytics.zones;
    if (list.some(function (s) { return s.name === name; })) return this.say(this.text("Duplicate", { name: name }), "error");
    if (line) {
      list.push({ name: name, start: this.draft[0], end: this.draft[1] });
    } else {
      const zone = { name: name, polygon: this.draft.slice() };
      const limit = document.getElementById("zone-limit").value;
      if (limit !== "") zone.crowd_limit = parseInt(limit, 10);
      list.push(zone);
    }
    this.draft = [];
    nameInput.value = "";
    this.dirty = true;
    this.say(this.text("Added", { name: name }), "warn");
    this.draw();
  };

  Editor.prototype.remove = function (kind, name) {
    const key = kind === "line" ? "lines" : "zones";
    this.analytics[key] = this.analytics[key].filter(function (s) { return s.name !== name; });
    this.dirty = true;
    this.say(this.text("Removed", { name: name }), "warn");
    this.draw();
  };

  Editor.prototype.save = async function () {
    const self = this;
    const button = document.getElementById("save-analytics");
    button.disabled = true;
    self.say(self.text("Saving"), "");
    try {
      const response = await fetch(self.root.dataset.saveUrl, {
        method: "PUT", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(self.analytics),
      });
      const body = await response.json().catch(function () { return {}; });
      if (!response.ok) {
        self.say(self.text("SaveFailed", { reason: body.detail || ("HTTP " + response.status) }), "error");
        return;
      }
      self.analytics = body.analytics || self.analytics;
      self.analytics.lines = self.analytics.lines || [];
      self.analytics.zones = self.analytics.zones || [];
      self.dirty = false;
      self.say(self.text("Saved"), "done");
      self.draw();
    } catch (err) {
      self.say(self.text("SaveFailed", { reason: String(err) }), "error");
    } finally {
      button.disabled = false;
    }
  };

  Editor.prototype.draw = function () {
    const w = this.picture.clientWidth, h = this.picture.clientHeight;
    const svg = this.svg;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const X = function (p) { return p[0] * w; }, Y = function (p) { return p[1] * h; };
    const self = this;
    drawableZones(this.analytics).forEach(function (z) {
      svg.appendChild(el("polygon", { class: "zone", "data-zone": z.name,
        points: z.polygon.map(function (p) { return X(p) + "," + Y(p); }).join(" ") }));
      svg.appendChild(el("text", { class: "label", x: X(z.polygon[0]) + 4, y: Y(z.polygon[0]) + 14 }, z.name));
    });
    drawableLines(this.analytics).forEach(function (l) {
      const x1 = X(l.start), y1 = Y(l.start), x2 = X(l.end), y2 = Y(l.end);
      svg.appendChild(el("line", { class: "count-line", "data-line": l.name, x1: x1, y1: y1, x2: x2, y2: y2 }));
      svg.appendChild(el("circle", { class: "start", cx: x1, cy: y1, r: 4 }));
      // "in" is crossing from the right of start→end to its left: the left-hand normal (dy, -dx) on screen.
      const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1;
      const mx = (x1 + x2) / 2, my = (y1 + y2) / 2, nx = dy / len * 22, ny = -dx / len * 22;
      svg.appendChild(el("line", { class: "in-arrow", x1: mx - nx, y1: my - ny, x2: mx + nx, y2: my + ny,
        "marker-end": "url(#arrow)" }));
      svg.appendChild(el("text", { class: "label", x: mx + nx + 3, y: my + ny + 4 }, l.name + " (" + self.text("In") + ")"));
    });
    if (this.draft.length) {
      const pts = this.draft.map(function (p) { return X(p) + "," + Y(p); }).join(" ");
      svg.appendChild(el(this.tool() === "zone" && this.draft.length > 2 ? "polygon" : "polyline",
        { class: "draft", points: pts }));
      this.draft.forEach(function (p) { svg.appendChild(el("circle", { class: "draft-point", cx: X(p), cy: Y(p), r: 5 })); });
    }
    const defs = el("defs", {});
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 8, refY: 5, markerWidth: 6, markerHeight: 6,
      orient: "auto-start-reverse" });
    marker.appendChild(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }));
    defs.appendChild(marker);
    svg.appendChild(defs);
    this.list();
  };

  Editor.prototype.list = function () {
    const body = document.getElementById("shapes");
    const self = this;
    body.innerHTML = "";
    const fmt = function (p) { return "(" + p[0].toFixed(3) + ", " + p[1].toFixed(3) + ")"; };
    const rows = drawableLines(this.analytics).map(function (l) { return ["line", l.name, fmt(l.start) + " → " + fmt(l.end)]; })
      .concat(drawableZones(this.analytics).map(function (z) {
        return ["zone", z.name, z.polygon.map(fmt).join(" ") +
          (z.crowd_limit != null ? " · " + self.text("Limit") + " " + z.crowd_limit : "")];
      }));
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 4; td.className = "empty"; td.textContent = this.text("Nothing");
      tr.appendChild(td); body.appendChild(tr);
      return;
    }
    rows.forEach(function (r) {
      const tr = document.createElement("tr");
      tr.dataset.shape = r[0] + ":" + r[1];
      [self.text(r[0] === "line" ? "Line" : "Zone"), r[1], r[2]].forEach(function (v, i) {
        const td = document.createElement("td");
        td.textContent = v;
        if (i === 2) td.className = "small";
        tr.appendChild(td);
      });
      if (self.mayEdit) {
        const td = document.createElement("td");
        const button = document.createElement("button");
        button.type = "button"; button.className = "danger small"; button.textContent = self.text("Delete");
        button.dataset.delete = r[0] + ":" + r[1];
        button.addEventListener("click", function () { self.remove(r[0], r[1]); });
        td.appendChild(button); tr.appendChild(td);
      }
      body.appendChild(tr);
    });
  };

  Editor.prototype.start = function () {
    const self = this;
    this.frame.addEventListener("click", function (e) { self.click(e); });
    const on = function (id, fn) { const b = document.getElementById(id); if (b) b.addEventListener("click", fn); };
    on("add-shape", function () { self.add(); });
    const name = document.getElementById("shape-name");
    if (name) name.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); self.add(); } });
    on("clear-draft", function () { self.draft = []; self.say("", ""); self.draw(); });
    on("save-analytics", function () { self.save(); });
    on("refresh-snapshot", function () { self.loadSnapshot(); });
    this.root.querySelectorAll('input[name="tool"]').forEach(function (r) {
      r.addEventListener("change", function () {
        self.draft = [];
        self.root.dataset.tool = self.tool();
        self.draw();
      });
    });
    this.root.dataset.tool = this.tool();
    window.addEventListener("resize", function () { self.draw(); });
    window.addEventListener("beforeunload", function (e) {
      if (self.dirty) { e.preventDefault(); e.returnValue = self.text("Leave"); }
    });
    this.draw();
    this.loadSnapshot().then(function () { self.root.dataset.ready = "1"; });
  };

  // ------------------------------------------------------------ passenger-flow chart
  let plot = null;

  async function drawFlow() {
    const form = document.getElementById("flow-controls");
    const box = document.getElementById("flow-chart");
    const note = document.getElementById("flow-note");
    if (!form || !box || !window.uPlot) return;
    const range = form.querySelector('input[name="range"]:checked').value;
    const hours = { "24h": 24, "7d": 168, "30d": 720 }[range];
    const end = new Date(), start = new Date(end.getTime() - hours * 3600 * 1000);
    const url = form.dataset.url + "?bucket=" + (range === "30d" ? "day" : "hour") +
      "&start=" + encodeURIComponent(start.toISOString()) + "&end=" + encodeURIComponent(end.toISOString());
    const response = await fetch(url, { credentials: "same-origin" });
    const data = await response.json();
    if (plot) { plot.destroy(); plot = null; }
    if (!response.ok || !data.points.length) {
      box.dataset.points = "0";
      note.textContent = response.ok ? form.dataset.empty : data.detail;
      return;
    }
    // The API answers one point per line and bucket: add the lines up per bucket.
    const sums = new Map();
    data.points.forEach(function (p) {
      const t = Date.parse(p.start) / 1000;
      const s = sums.get(t) || [0, 0];
      s[0] += p.count_in; s[1] += p.count_out;
      sums.set(t, s);
    });
    const ts = Array.from(sums.keys()).sort(function (a, b) { return a - b; });
    box.dataset.points = String(ts.length);
    note.textContent = form.dataset.in + " " + data.total_in + " · " + form.dataset.out + " " + data.total_out;
    // In and out side by side in each bucket; times in the market's zone, 24-hour clock, as on the other pages.
    const bars = function (align) {
      return uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.4, 30], align: align }) : undefined;
    };
    const daily = range === "30d", step = daily ? 86400 : 3600;
    const label = new Intl.DateTimeFormat(document.documentElement.lang || "zh-CN", daily
      ? { timeZone: form.dataset.timezone, month: "2-digit", day: "2-digit" }
      : { timeZone: form.dataset.timezone, month: range === "7d" ? "2-digit" : undefined,
          day: range === "7d" ? "2-digit" : undefined, hour: "2-digit", minute: "2-digit", hour12: false });
    plot = new uPlot({
      width: Math.max(320, box.clientWidth), height: 260,
      tzDate: function (t) { return uPlot.tzDate(new Date(t * 1000), form.dataset.timezone); },
      cursor: { drag: { x: true, y: false } },
      scales: {
        x: { time: true, range: function (u, min, max) { return [min - step / 2, max + step / 2]; } }, // whole bars
        y: { range: function (u, min, max) { return [0, Math.max(1, max) * 1.1]; } },
      },
      axes: [
        { space: 90, values: function (u, splits) { return splits.map(function (t) { return label.format(new Date(t * 1000)); }); } },
        {},
      ],
      series: [
        { label: form.dataset.time, value: function (u, t) { return t == null ? "--" : label.format(new Date(t * 1000)); } },
        { label: form.dataset.in, stroke: "#0b7a53", fill: "rgba(11,122,83,0.45)", width: 1, paths: bars(-1),
          points: { show: false } },
        { label: form.dataset.out, stroke: "#b9770e", fill: "rgba(185,119,14,0.45)", width: 1, paths: bars(1),
          points: { show: false } },
      ],
    }, [ts, ts.map(function (t) { return sums.get(t)[0]; }), ts.map(function (t) { return sums.get(t)[1]; })], box);
    box.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", function () {
    (window.mfLive || []).forEach(function (source) { source.addEventListener("presence", onPresence); });
    const tiles = document.querySelectorAll("figure.snapshot");
    tiles.forEach(watchSnapshot);
    if (tiles.length) setInterval(refreshGrid, REFRESH_MS);
    const root = document.getElementById("editor");
    if (root) new Editor(root).start();
    const form = document.getElementById("flow-controls");
    if (form) {
      form.addEventListener("change", drawFlow);
      window.addEventListener("resize", function () {
        const box = document.getElementById("flow-chart");
        if (plot && box) plot.setSize({ width: Math.max(320, box.clientWidth), height: 260 });
      });
      drawFlow();
    }
  });
})();
