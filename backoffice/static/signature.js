// Signature pads: draw with mouse, pen or finger; the drawing is kept as a PNG data URL in the
// hidden input named by data-target, which the server validates and embeds in the contract.
(function () {
  function setup(canvas) {
    var ctx = canvas.getContext("2d");
    var target = document.getElementById(canvas.dataset.target);
    var drawing = false, drawn = false;
    ctx.lineWidth = 2.5; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#10206b";
    if (target.value) {
      var img = new Image();
      img.onload = function () { ctx.drawImage(img, 0, 0); drawn = true; };
      img.src = target.value;
    }
    function point(e) {
      var r = canvas.getBoundingClientRect();
      return { x: (e.clientX - r.left) * canvas.width / r.width, y: (e.clientY - r.top) * canvas.height / r.height };
    }
    canvas.addEventListener("pointerdown", function (e) {
      drawing = true; var p = point(e); ctx.beginPath(); ctx.moveTo(p.x, p.y);
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", function (e) {
      if (!drawing) return; var p = point(e); ctx.lineTo(p.x, p.y); ctx.stroke(); drawn = true;
    });
    // The same side's file field: drawing, or 清除, lets go of a file chosen there, so that one
    // over the size limit no longer blocks the form (found by an exploratory test).
    var upload = document.getElementById(canvas.dataset.target + "-file");
    function dropUpload() {
      if (upload && upload.value) {
        upload.value = "";
        upload.dispatchEvent(new Event("change", { bubbles: true }));  // forms.js checks it again
      }
    }
    function finish() {
      if (!drawing) return; drawing = false;
      if (drawn) { target.value = canvas.toDataURL("image/png"); dropUpload(); }
    }
    canvas.addEventListener("pointerup", finish);
    canvas.addEventListener("pointerleave", finish);
    document.querySelector('[data-clear="' + canvas.id + '"]').addEventListener("click", function () {
      ctx.clearRect(0, 0, canvas.width, canvas.height); target.value = ""; drawn = false; dropUpload();
    });
  }
  document.querySelectorAll("canvas.signature-pad").forEach(setup);
})();
