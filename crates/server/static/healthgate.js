// healthgate: the one script pages load, from this server only (the CSP
// allows no inline script). Pages work without it; with it, a Copy button
// appears beside each value worth copying (client ids, secrets, commands).
(function () {
  "use strict";
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) {
      return;
    }
    var label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(
        function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = label; }, 2000);
        },
        function () {
          button.textContent = "Select and copy it by hand";
        }
      );
    });
  });
})();
