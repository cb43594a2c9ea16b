/* Prices and shelf-label pages: the few things htmx does not do by itself.
 *
 * select[data-auto-submit]          changing it reloads the page with the form (another market: other stalls)
 * select[data-preview-page="<id>"]  shows that page of the label's rendered image in the same row
 * [data-polling]                    refreshed by htmx every few seconds; never under a person using it
 */
(function () {
  "use strict";
  // The label table refreshes itself while labels have not confirmed ([data-polling]); a refresh that comes back
  // while the person has a menu open or a control focused in it is dropped (the next one will do).
  function busy(el) {
    return el.querySelector("details[open]") || (document.activeElement && el.contains(document.activeElement) &&
      document.activeElement !== document.body);
  }
  document.addEventListener("htmx:beforeSwap", function (ev) {
    const source = ev.detail.requestConfig && ev.detail.requestConfig.elt; // who asked (detail.elt is the target)
    if (source && source.hasAttribute && source.hasAttribute("data-polling") && busy(source)) {
      ev.detail.shouldSwap = false;
    }
  });
  document.addEventListener("change", function (ev) {
    const el = ev.target;
    if (!(el instanceof HTMLSelectElement)) return;
    if (el.dataset.autoSubmit !== undefined && el.form) { el.form.submit(); return; }
    const label = el.dataset.previewPage;
    if (!label) return;
    const row = el.closest("tr");
    const img = row && row.querySelector("img[data-preview]");
    if (!img) return;
    const url = new URL(img.src, document.baseURI); // keeps `v`, the picture's version
    url.searchParams.set("page", el.value);
    img.src = url.toString();
    img.alt = el.options[el.selectedIndex].text;
  });
})();
