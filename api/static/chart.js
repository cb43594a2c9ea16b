/* Device telemetry chart: downsampled mean with a min–max band, drawn by uPlot; drag to zoom, double-click to
 * reset. Data: GET /devices/{id}/series?field=…&range=1h|24h|7d. Times are shown in the market's time zone. */
(function () {
  "use strict";
  let plot = null;

  function tzDate(tz) {
    return function (ts) { return uPlot.tzDate(new Date(ts * 1000), tz); };
  }

  async function draw() {
    const form = document.getElementById("chart-controls");
    const box = document.getElementById("chart");
    const note = document.getElementById("chart-note");
    if (!form || !box || !window.uPlot) return;
    const field = form.elements.field.value;
    const range = form.querySelector('input[name="range"]:checked').value;
    const url = "/devices/" + encodeURIComponent(form.dataset.device) + "/series?field=" +
      encodeURIComponent(field) + "&range=" + range;
    const response = await fetch(url, { credentials: "same-origin" });
    const data = await response.json();
    if (plot) { plot.destroy(); plot = null; }
    box.dataset.points = String(response.ok ? data.t.length : 0);
    if (!response.ok || !data.t.length) {
      note.textContent = response.ok ? form.dataset.empty : data.detail;
      return;
    }
    note.textContent = "";
    const opts = {
      width: Math.max(320, box.clientWidth), height: 280,
      tzDate: tzDate(form.dataset.timezone),
      cursor: { drag: { x: true, y: false } },
      series: [
        {},
        { label: form.dataset.min, stroke: "rgba(11,122,83,0.35)", width: 1 },
        { label: form.dataset.max, stroke: "rgba(11,122,83,0.35)", width: 1 },
        { label: form.dataset.mean + " " + field, stroke: "#0b7a53", width: 2 },
      ],
      bands: [{ series: [2, 1], fill: "rgba(11,122,83,0.12)" }],
      // The time range shown (epoch s) on the box, so a zoom can be read back (tests, bookmarks).
      hooks: { setScale: [function (u, key) {
        if (key === "x") { box.dataset.xMin = String(u.scales.x.min); box.dataset.xMax = String(u.scales.x.max); }
      }] },
    };
    plot = new uPlot(opts, [data.t, data.min, data.max, data.mean], box);
    box.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("chart-controls");
    if (!form) return;
    form.addEventListener("change", draw);
    window.addEventListener("resize", function () {
      const box = document.getElementById("chart");
      if (plot && box) plot.setSize({ width: Math.max(320, box.clientWidth), height: 280 });
    });
    draw();
  });
})();
