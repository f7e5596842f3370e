/* RunLedger: viewer timezone cookie, the small-screen menu and confirm prompts. Vanilla JS, no framework. */
(function () {
  "use strict";
  document.documentElement.classList.remove("no-js");

  // Times are rendered server-side in the viewer's timezone, read from this cookie
  // (apps.core.middleware.ViewerTimezoneMiddleware). Timezone names are cookie-safe as they are.
  var tz = "";
  try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { tz = ""; }
  var valid = /^[A-Za-z0-9_+\-\/]{1,64}$/.test(tz);
  var current = (document.cookie.match(/(?:^|;\s*)tz=([^;]*)/) || [])[1] || "";
  var changed = valid && current !== tz;
  if (changed) {
    document.cookie = "tz=" + tz + "; path=/; max-age=31536000; samesite=lax";
  }

  document.addEventListener("DOMContentLoaded", function () {
    // A page with times rendered before the cookie existed is drawn again once, in the right zone.
    if (changed && document.querySelector(".site-header") && !sessionStorage.getItem("rl-tz-reloaded")) {
      sessionStorage.setItem("rl-tz-reloaded", "1");
      window.location.reload();
      return;
    }
    // Destructive buttons (delete at OpenAI) ask once more; the page itself already shows what goes.
    document.addEventListener("submit", function (event) {
      var button = event.submitter;
      var message = button && button.getAttribute("data-confirm");
      if (message && !window.confirm(message)) event.preventDefault();
    });
    var toggle = document.querySelector(".nav-toggle");
    var nav = document.getElementById("site-nav");
    if (!toggle || !nav) return;
    toggle.addEventListener("click", function () {
      var open = toggle.getAttribute("aria-expanded") === "true";
      toggle.setAttribute("aria-expanded", open ? "false" : "true");
      nav.classList.toggle("open", !open);
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && nav.classList.contains("open")) {
        toggle.setAttribute("aria-expanded", "false");
        nav.classList.remove("open");
        toggle.focus();
      }
    });
  });
})();
