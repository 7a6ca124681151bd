// "only where arms disagree": hide the example rows on which every arm predicted the same.
(function () {
  document.querySelectorAll("input.only-disagree").forEach(function (box) {
    box.addEventListener("change", function () {
      var table = document.getElementById(box.dataset.target);
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var visible = !box.checked || row.dataset.disagree === "1";
        row.hidden = !visible;
        if (visible) shown += 1;
      });
      table.dataset.shown = String(shown);
    });
  });
})();
