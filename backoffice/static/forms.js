// A form sends once: a double click (or an impatient second click) on a submit button used to
// send the same POST twice, so a staff user made twice showed "already exists" over the page with
// the new password, and a second payment confirmation raced the first. A repeat submit is
// ignored while the page waits for the answer; after a few seconds (a download, which leaves the
// page where it is) or on coming back to the page, the form can be sent again.
(function () {
  var HOLD_MS = 8000;
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented) return; // (a form's own check stopped it: not sent)
    var sent = Number(form.dataset.sentAt || 0);
    if (sent && Date.now() - sent < HOLD_MS) {
      event.preventDefault();
      return;
    }
    form.dataset.sentAt = String(Date.now());
    form.setAttribute("aria-busy", "true");
  });
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-sent-at]").forEach(function (form) {
      delete form.dataset.sentAt;
      form.removeAttribute("aria-busy");
    });
  });
})();
