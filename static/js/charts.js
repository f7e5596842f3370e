/* Draws every [data-figure] element with plotly.js from the figure JSON the server built. */
(function () {
  "use strict";
  var AXES = ["xaxis", "yaxis", "xaxis2", "yaxis2"];

  // One look for every chart, whichever app built its figure: axes make room for their tick labels and
  // titles (so a right-hand axis title or rotated ticks never sit on the numbers), and legends sit above
  // the plot, where a legend that wraps on a phone cannot cover the x axis.
  function fit(layout, element) {
    layout = layout || {};
    AXES.forEach(function (name) {
      var axis = layout[name];
      if (!axis) return;
      axis.automargin = true;
      // Dollar axes read as money ($4), whichever app built the figure.
      var title = axis.title && (typeof axis.title === "object" ? axis.title.text : axis.title);
      if (/^USD\b/.test(title || "") && !axis.tickprefix && axis.type !== "log") axis.tickprefix = "$";
      if (axis.title && typeof axis.title === "object" && axis.title.text && axis.title.standoff === undefined) {
        axis.title.standoff = 6;
      }
    });
    var legend = layout.legend;
    if (legend && legend.orientation === "h" && typeof legend.y === "number" && legend.y < 0) {
      layout.legend = Object.assign({}, legend, { x: 0, y: 1.02, xanchor: "left", yanchor: "bottom" });
      layout.margin = Object.assign({}, layout.margin, { t: Math.max((layout.margin || {}).t || 0, 36) });
    }
    if (element.clientWidth < 520) {
      layout.legend = Object.assign({}, layout.legend, { font: { size: 11 } });
      layout.margin = Object.assign({}, layout.margin, { l: Math.min((layout.margin || {}).l || 48, 48), r: Math.min((layout.margin || {}).r || 12, 12) });
    }
    return layout;
  }

  function draw() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-figure]").forEach(function (element) {
      var source = document.getElementById(element.getAttribute("data-figure"));
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      var config = { responsive: true, displaylogo: false, displayModeBar: false };
      window.Plotly.newPlot(element, figure.data, fit(figure.layout, element), config).then(function () {
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
