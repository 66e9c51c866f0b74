// Progressive enhancements only: every page works without this script.
(function () {
  "use strict";

  // A click anywhere on a result row opens the state (the id cell stays a real link).
  document.querySelectorAll("tr[data-href]").forEach(function (row) {
    row.classList.add("clickable");
    row.addEventListener("click", function (event) {
      if (event.target.closest("a, button, input, select")) {
        return;
      }
      window.location.assign(row.getAttribute("data-href"));
    });
  });

  // "/" focuses the search box (or the state id box), as on many sites.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.target.closest("input, select, textarea")) {
      return;
    }
    var box = document.querySelector("#search input[name=q]") ||
      document.querySelector(".lookup input[name=state_id]");
    if (box) {
      event.preventDefault();
      box.focus();
    }
  });

  // Choosing a version in the diff form shows the diff at once.
  var diffForm = document.getElementById("diff-form");
  if (diffForm) {
    diffForm.querySelectorAll("select").forEach(function (select) {
      select.addEventListener("change", function () {
        diffForm.submit();
      });
    });
  }
})();
