// A form whose request would be over the server's limit (MAX_CONTENT_LENGTH, rendered into the
// form as data-max-bytes) is not sent: the server would refuse it with a 413 before reading
// anything, and the customer who chose too big a recipients' file found the page that came back
// with none of what they had typed (numbers, text, schedule). A file field may carry its own
// limit (data-max-bytes on the <input type="file">: a voucher, a statement, a seal or a signature
// image, which the server refuses past its own limit after the whole upload, the file to be
// chosen again). The sizes are checked when a file is chosen and again at the submit, and said in
// Chinese with the limit, where the form shows its errors (the element marked data-size-error
// nearest the field, else the form's). The server's pages stay for browsers without scripts.
(function () {
  var PART_BYTES = 200; // a multipart part's boundary and headers, rounded up
  var encoder = new TextEncoder();

  function sizeText(bytes, base) {
    // As the server says a limit (services.receipts.size_text; images in decimal MB: data-size-base),
    // rounded up: a file just over 16 MB does not read "16 MB".
    base = base || 1048576;
    if (bytes < base) return Math.ceil(bytes / (base === 1000000 ? 1000 : 1024)) + " KB";
    return String(Math.ceil((bytes / base) * 10) / 10).replace(/\.0$/, "") + " MB";
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

  function checked(form) {
    // A form checks sizes when it, or one of its file fields, names a limit.
    return Boolean(form && (form.dataset.maxBytes || form.querySelector('input[type="file"][data-max-bytes]')));
  }

  function fileTooBig(form) {
    // A file over its field's own limit: { field, message } of the first one, or null.
    var outcome = form.dataset.sizeOutcome || "未提交";
    var kept = form.dataset.sizeKept || "您填写的其他内容都还在";
    var fields = form.querySelectorAll('input[type="file"][data-max-bytes]');
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      var limit = Number(field.dataset.maxBytes);
      if (!limit || field.disabled) continue;
      var files = field.files || [];
      for (var j = 0; j < files.length; j++) {
        if (files[j].size <= limit) continue;
        var base = Number(field.dataset.sizeBase) || 1048576;
        var max = field.dataset.maxSize || sizeText(limit, base);
        var what = field.dataset.sizeWhat || "单个文件";
        return {
          field: field,
          message: "所选文件“" + files[j].name + "”有 " + sizeText(files[j].size, base) + "，超过" + what + "的上限 " + max +
            "：" + outcome + "。请换用较小的文件；" + kept + "。",
        };
      }
    }
    return null;
  }

  function tooBig(form) {
    var own = fileTooBig(form);
    if (own) return own;
    var limit = Number(form.dataset.maxBytes);
    if (!limit) return null;
    var size = requestBytes(form);
    if (size.total <= limit) return null;
    var max = form.dataset.maxSize || sizeText(limit);
    var outcome = form.dataset.sizeOutcome || "未提交";
    var kept = form.dataset.sizeKept || "您填写的其他内容都还在";
    if (size.biggest !== null && size.biggest.size > limit / 2) {
      return {
        field: null,
        message: "所选文件“" + size.biggest.name + "”有 " + sizeText(size.biggest.size) + "，超过一次提交的上限 " + max +
          "：" + outcome + "。请换用较小的文件（或分几次上传）；" + kept + "。",
      };
    }
    return {
      field: null,
      message: "本次提交的内容共约 " + sizeText(size.total) + "，超过一次提交的上限 " + max + "：" + outcome + "。请减少内容或换用较小的文件；" + kept + "。",
    };
  }

  function placeFor(form, field) {
    var near = field && field.closest(".field");
    return (near && near.querySelector("[data-size-error]")) || form.querySelector("[data-size-error]");
  }

  function show(form, problem) {
    // One message at a time, next to the field it is about; the others cleared.
    var place = problem ? placeFor(form, problem.field) : null;
    form.querySelectorAll("[data-size-error]").forEach(function (other) {
      if (other === place) return;
      other.textContent = "";
      other.hidden = true;
      var around = other.closest(".field");
      if (around && !around.querySelector(".field-error:not([data-size-error]):not([hidden])")) around.classList.remove("has-error");
    });
    if (!place) return null;
    place.textContent = problem.message;
    place.hidden = false;
    var field = place.closest(".field");
    if (field) field.classList.add("has-error");
    return place;
  }

  document.addEventListener("change", function (event) {
    var form = event.target.form;
    if (event.target.type === "file" && checked(form)) show(form, tooBig(form));
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!checked(form)) return;
    var problem = tooBig(form);
    var place = show(form, problem);
    if (problem) {
      event.preventDefault(); // (the guard below sees it and leaves the form free to send again)
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
