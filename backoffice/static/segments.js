// The send form's count under the message: characters, the SMS parts it is charged as and what
// that costs a number, as intake will count them (dispatch/segments.py: GSM 7-bit 160 / 153 a
// part, else UCS-2 70 / 67, an escape pair or a surrogate pair never split; the account's
// signature added first when intake adds it). Found by an exploratory test: a customer learned
// what a message cost only from the charge, after sending it to every number.
(function () {
  var field = document.getElementById("content");
  var out = document.getElementById("content-count");
  if (!field || !out) return;
  var GSM = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u001bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var GSM_EXTENSION = "\f^{}\\[~]|€";
  var maxParts = parseInt(field.dataset.maxSegments, 10);
  var signature = field.dataset.signature || "";
  var price = field.dataset.price || "0";

  function units(text) {
    // Each character's size in the encoding's units, and the encoding.
    var chars = Array.from(text);
    var gsm = chars.every(function (c) { return (GSM.indexOf(c) >= 0 && c !== "\u001b") || GSM_EXTENSION.indexOf(c) >= 0; });
    return {
      gsm: gsm,
      sizes: chars.map(function (c) { return gsm ? (GSM_EXTENSION.indexOf(c) >= 0 ? 2 : 1) : c.length; }),
    };
  }

  function parts(sizes, single, part) {
    var total = sizes.reduce(function (a, b) { return a + b; }, 0);
    if (total <= single) return 1;
    var count = 1, used = 0;
    sizes.forEach(function (size) {
      if (used + size > part) { count += 1; used = 0; }
      used += size;
    });
    return count;
  }

  function times(decimal, n) {
    // `decimal` (a price string such as "0.045") times n, written as the server writes prices.
    var whole = decimal.split(".")[0], frac = (decimal.split(".")[1] || "");
    var scaled = BigInt(whole + frac) * BigInt(n), digits = frac.length;
    var text = scaled.toString().padStart(digits + 1, "0");
    var head = text.slice(0, text.length - digits), tail = text.slice(text.length - digits).replace(/0+$/, "");
    return head + "." + tail.padEnd(2, "0");
  }

  function update() {
    var text = field.value.replace(/\r\n?/g, "\n").trim();
    if (!text) { out.textContent = ""; out.classList.remove("field-error"); return; }
    var added = signature && text.indexOf("【" + signature + "】") < 0;
    if (added) text = "【" + signature + "】" + text;
    var u = units(text);
    var length = u.sizes.reduce(function (a, b) { return a + b; }, 0);
    var n = u.gsm ? parts(u.sizes, 160, 153) : parts(u.sizes, 70, 67);
    var said = "共 " + length + " 个字符" + (added ? "（含自动添加的签名【" + signature + "】）" : "") + "，按 " + n + " 条计费";
    if (n > maxParts) {
      out.textContent = said + "，超过每条短信最多 " + maxParts + " 条的上限，将被拒发，请删减内容";
      out.classList.add("field-error");
    } else {
      out.textContent = said + "，每个号码 " + times(price, n) + " 元";
      out.classList.remove("field-error");
    }
  }

  field.addEventListener("input", update);
  update();
})();
