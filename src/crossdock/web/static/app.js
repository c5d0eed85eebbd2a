/* crossdock dashboard: the few behaviours a server-rendered page cannot do alone. No build step. */
(function () {
  "use strict";

  function updateBulkBar() {
    var bar = document.getElementById("bulk-bar");
    if (!bar) return;
    var checked = document.querySelectorAll(".row-check:checked").length;
    var all = document.getElementById("select-all-matching");
    var count = document.getElementById("bulk-count");
    // ticked, the bulk action covers the whole filter: say so, not how many rows of this page are checked
    count.textContent = all && all.checked ? count.getAttribute("data-all") : String(checked);
    bar.classList.toggle("hidden", checked === 0 && !(all && all.checked));
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (!(target instanceof HTMLInputElement)) return;
    if (target.id === "check-page") {
      document.querySelectorAll(".row-check").forEach(function (box) { box.checked = target.checked; });
    }
    if (target.classList.contains("row-check") || target.id === "check-page" || target.id === "select-all-matching") {
      updateBulkBar();
    }
    if (target.closest(".status-filter")) {
      target.closest("label").classList.toggle("on", target.checked);
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent || "").then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });

  document.addEventListener("DOMContentLoaded", updateBulkBar);
})();
