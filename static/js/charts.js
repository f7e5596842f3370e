/* Draws every [data-figure] element with plotly.js from the figure JSON the server built. */
(function () {
  "use strict";
  function draw() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-figure]").forEach(function (element) {
      var source = document.getElementById(element.getAttribute("data-figure"));
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      var config = { responsive: true, displaylogo: false, displayModeBar: false };
      window.Plotly.newPlot(element, figure.data, figure.layout, config).then(function () {
        element.setAttribute("data-rendered", "true");
      });
      if (element.hasAttribute("data-click-links")) {
        // Scatter points carry their run's URL in customdata[0].
        element.on("plotly_click", function (event) {
          var point = event.points && event.points[0];
          if (point && point.customdata && point.customdata[0]) window.location.href = point.customdata[0];
        });
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
