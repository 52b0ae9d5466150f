// Progressive enhancement for the keyledger dashboard: every form works
// without this file. It adds a copy button to secrets shown once.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var buttons = document.querySelectorAll("button[data-copy]");
    Array.prototype.forEach.call(buttons, function (btn) {
      var input = document.getElementById(btn.getAttribute("data-copy"));
      if (!input) { return; }
      var done = btn.parentNode.querySelector(".copied");
      btn.hidden = false;
      input.addEventListener("focus", function () { input.select(); });
      btn.addEventListener("click", function () {
        var shown = function () {
          if (done) { done.hidden = false; }
          btn.textContent = "Copied";
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(shown, function () {
            input.select();
          });
          return;
        }
        input.select();
        try {
          if (document.execCommand("copy")) { shown(); }
        } catch (e) { /* the key stays selected for a manual copy */ }
      });
    });
  });
})();
