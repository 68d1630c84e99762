// Live progress of a subsidy batch: the console's only script. It polls the page's own
// progress.json and fills in the counts and amounts by state, so the page updates without a
// reload; without JavaScript the page shows the progress as of its load.
(function () {
  "use strict";
  var box = document.getElementById("live-progress");
  if (!box) { return; }
  var url = box.getAttribute("data-progress-url");
  var statusBox = document.getElementById("batch-status");
  var pollMs = 1000;
  var states = ["pending", "sending", "succeeded", "failed", "returned"];
  function show(progress) {
    states.forEach(function (state) {
      var lines = box.querySelector('[data-progress="' + state + '-lines"]');
      var amount = box.querySelector('[data-progress="' + state + '-amount"]');
      if (lines) { lines.textContent = String(progress[state].lines); }
      if (amount) { amount.textContent = progress[state].amount; }
    });
    var stale = document.getElementById("failed-lines-stale");
    if (stale && progress.failed.lines > Number(stale.getAttribute("data-failed-at-load"))) {
      stale.hidden = false;
      var none = document.getElementById("no-failed-lines");
      if (none) { none.hidden = true; }
    }
    if (statusBox) {
      if (progress.status !== statusBox.getAttribute("data-status")) {
        // The buttons were drawn for the old state: hide them and offer a reload instead.
        document.querySelectorAll("#batch-actions form").forEach(function (form) { form.hidden = true; });
        var changed = document.getElementById("batch-changed");
        if (changed) { changed.hidden = false; }
      }
      statusBox.textContent = progress.status_label;
      statusBox.setAttribute("data-status", progress.status);
    }
    return progress.status !== "completed" && progress.status !== "cancelled";
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("progress answered " + response.status); }
        return response.json();
      })
      .then(function (progress) { if (show(progress)) { setTimeout(poll, pollMs); } })
      .catch(function () { setTimeout(poll, pollMs * 5); });
  }
  setTimeout(poll, pollMs);
})();
