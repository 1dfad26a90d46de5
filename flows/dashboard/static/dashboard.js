// coincap-pipeline local dashboard: the asset picker, table filters and click-to-sort. No dependencies.
(function () {
  "use strict";

  // Asset picker: options come from assets/asset-list.js (window.COINCAP_ASSETS = [[slug, label], ...]).
  function initPicker() {
    var select = document.getElementById("asset-picker");
    if (!select) return;
    var assets = window.COINCAP_ASSETS || [];
    var current = select.getAttribute("data-current");
    if (assets.length) {
      var fragment = document.createDocumentFragment();
      assets.forEach(function (entry) {
        var option = document.createElement("option");
        option.value = entry[0];
        option.textContent = entry[1]; // text, never HTML
        if (entry[0] === current) option.selected = true;
        fragment.appendChild(option);
      });
      select.textContent = "";
      select.appendChild(fragment);
    }
    select.addEventListener("change", function () {
      window.location.href = encodeURIComponent(select.value) + ".html";
    });
  }

  // Filter: <input data-filter="name"> hides rows of <table data-table="name"> that do not contain the text.
  function initFilters() {
    document.querySelectorAll("input[data-filter]").forEach(function (input) {
      var table = document.querySelector('table[data-table="' + input.getAttribute("data-filter") + '"]');
      if (!table) return;
      input.addEventListener("input", function () {
        var needle = input.value.trim().toLowerCase();
        table.querySelectorAll("tbody tr").forEach(function (row) {
          row.hidden = needle !== "" && row.textContent.toLowerCase().indexOf(needle) === -1;
        });
      });
    });
  }

  // Sort: click a header; cells with data-sort sort by that value (numbers numerically), others by text.
  function initSorting() {
    document.querySelectorAll("table.data").forEach(function (table) {
      var headers = table.querySelectorAll("thead th");
      headers.forEach(function (th, index) {
        th.addEventListener("click", function () {
          var ascending = th.getAttribute("aria-sort") !== "ascending";
          headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
          var body = table.tBodies[0];
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (a, b) {
            var x = key(a.cells[index]), y = key(b.cells[index]);
            if (x === y) return 0;
            if (x === null) return 1; // empty cells last, both ways
            if (y === null) return -1;
            return (x < y ? -1 : 1) * (ascending ? 1 : -1);
          });
          rows.forEach(function (row) { body.appendChild(row); });
        });
      });
    });
  }

  function key(cell) {
    if (!cell) return null;
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "" || raw === "\u2013") return null;
    var number = Number(raw);
    return isNaN(number) ? raw.toLowerCase() : number;
  }

  document.addEventListener("DOMContentLoaded", function () {
    initPicker();
    initFilters();
    initSorting();
  });
})();
