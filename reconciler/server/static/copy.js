// The copy buttons of the link page: copy the text of the element a button names.
// Loaded from this origin (the CSP forbids inline script).
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) { return; }
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) { return; }
  var text = source.textContent.trim();
  function done(ok) {
    button.textContent = ok ? "Copied" : "Select and copy by hand";
    button.setAttribute("data-copied", ok ? "yes" : "no");
  }
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
  } else {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    done(document.execCommand("copy"));
  }
});
