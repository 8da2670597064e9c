// A form whose request would be over the server's limit (MAX_CONTENT_LENGTH, rendered into the
// form as data-max-bytes) is not sent: the server would refuse it with a 413 before reading
// anything, and the customer who chose too big a recipients' file found the page that came back
// with none of what they had typed (numbers, text, schedule). The size is checked when the file
// is chosen and again at the submit, and said in Chinese with the limit, where the form shows
// its errors (the element marked data-size-error). The server's 413 page stays for browsers
// without scripts.
(function () {
  var PART_BYTES = 200; // a multipart part's boundary and headers, rounded up
  var encoder = new TextEncoder();

  function sizeText(bytes) {
    // As the server says a limit (services.receipts.size_text), rounded up: a file just over
    // 16 MB does not read "16 MB".
    if (bytes < 1048576) return Math.ceil(bytes / 1024) + " KB";
    return String(Math.ceil((bytes / 1048576) * 10) / 10).replace(/\.0$/, "") + " MB";
  }

  function requestBytes(form) {
    var total = 0;
    var biggest = null;
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name || field.disabled) return;
      if (field.type === "file") {
        Array.prototype.forEach.call(field.files || [], function (file) {
          total += PART_BYTES + encoder.encode(file.name).length + file.size;
          if (biggest === null || file.size > biggest.size) biggest = file;
        });
      } else if ((field.type !== "checkbox" && field.type !== "radio") || field.checked) {
        var value = field.value || "";
        total += PART_BYTES + encoder.encode(value).length + (value.match(/\n/g) || []).length; // line breaks go as CRLF
      }
    });
    return { total: total, biggest: biggest };
  }

  function tooBig(form) {
    var limit = Number(form.dataset.maxBytes);
    if (!limit) return null;
    var size = requestBytes(form);
    if (size.total <= limit) return null;
    var max = form.dataset.maxSize || sizeText(limit);
    var kept = form.dataset.sizeKept || "您填写的其他内容都还在";
    if (size.biggest !== null && size.biggest.size > limit / 2) {
      return "所选文件“" + size.biggest.name + "”有 " + sizeText(size.biggest.size) + "，超过一次提交的上限 " + max +
        "：未提交，也未发送。请换用较小的文件（或分几次上传）；" + kept + "。";
    }
    return "本次提交的内容共约 " + sizeText(size.total) + "，超过一次提交的上限 " + max + "：未提交，也未发送。请减少内容或换用较小的文件；" + kept + "。";
  }

  function show(form, message) {
    var place = form.querySelector("[data-size-error]");
    if (!place) return;
    place.textContent = message || "";
    place.hidden = !message;
    var field = place.closest(".field");
    if (field) field.classList.toggle("has-error", Boolean(message));
  }

  document.addEventListener("change", function (event) {
    var form = event.target.form;
    if (event.target.type === "file" && form && form.dataset.maxBytes) show(form, tooBig(form));
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset.maxBytes) return;
    var message = tooBig(form);
    show(form, message);
    if (message) {
      event.preventDefault(); // (the guard below sees it and leaves the form free to send again)
      var place = form.querySelector("[data-size-error]");
      if (place) place.scrollIntoView({ block: "center" });
    }
  });
})();

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
