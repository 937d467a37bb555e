// The session page's calls table refreshes itself while the session is live: every few
// seconds it fetches the table from this origin and swaps it in. No other script runs.
"use strict";
(function () {
  function poll() {
    var calls = document.getElementById("calls");
    if (!calls || calls.dataset.live !== "true") return;
    fetch(calls.dataset.src, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html) calls.outerHTML = html;
        window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 2000);
})();
