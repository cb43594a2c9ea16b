/* Prices and shelf-label pages: the few things htmx does not do by itself.
 *
 * select[data-auto-submit]          changing it reloads the page with the form (another market: other stalls)
 * select[data-preview-page="<id>"]  shows that page of the label's rendered image in the same row
 */
(function () {
  "use strict";
  document.addEventListener("change", function (ev) {
    const el = ev.target;
    if (!(el instanceof HTMLSelectElement)) return;
    if (el.dataset.autoSubmit !== undefined && el.form) { el.form.submit(); return; }
    const label = el.dataset.previewPage;
    if (!label) return;
    const row = el.closest("tr");
    const img = row && row.querySelector("img[data-preview]");
    if (!img) return;
    img.src = "/labels/" + encodeURIComponent(label) + "/image.png?page=" + encodeURIComponent(el.value);
    img.alt = el.options[el.selectedIndex].text;
  });
})();
