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

  var DAY_MS = 86400000;
  var DAY = /^\d{4}-\d{2}-\d{2}$/;

  // A chart of UTC days (every x a "YYYY-MM-DD") over a short period: plotly reads one day as one instant,
  // so a single day's bars were a millisecond wide and the axis read "23:59:59.9996" to "00:00:00.0004", and
  // two or three days got "12:00" ticks between the days. One tick per day, and one day's bars a day wide.
  function fitDays(data, layout, element) {
    var axis = layout.xaxis;
    if (!axis || axis.type !== "date" || axis.dtick !== undefined) return;
    var days = {};
    var allDays = data.every(function (trace) {
      return (trace.x || []).every(function (x) { days[x] = true; return typeof x === "string" && DAY.test(x); });
    });
    var sorted = Object.keys(days).sort();
    if (!allDays || !sorted.length) return;
    var first = Date.parse(sorted[0]);
    var count = (Date.parse(sorted[sorted.length - 1]) - first) / DAY_MS + 1;
    if (count > 14) return;  // plotly's own ticks over a longer period are whole days or weeks
    // About 48 px a label: on a phone a fortnight is labelled every other or third day.
    var plotWidth = Math.max(element.clientWidth - 80, 120);
    axis.dtick = DAY_MS * Math.max(1, Math.ceil(count * 48 / plotWidth));
    var bars = data.filter(function (trace) { return trace.type === "bar"; });
    if (sorted.length === 1 && bars.length) {
      var iso = function (ms) { return new Date(ms).toISOString().slice(0, 19).replace("T", " "); };
      axis.range = [iso(first - DAY_MS / 2), iso(first + DAY_MS / 2)];
      var group = layout.barmode === "group" ? bars.length : 1;
      var width = 0.8 * DAY_MS / group;
      bars.forEach(function (trace, index) {
        trace.width = width;
        if (group > 1) trace.offset = -0.4 * DAY_MS + index * width;
      });
    }
  }

  // A legend above the plot takes its rows out of the figure's height: on a phone the nine series of a tenant's
  // cost-by-model chart wrapped to five rows and left bars 60-90 px tall. The figure grows instead, so the plot
  // keeps at least this height; a legend still taller than half the figure as first drawn scrolls, as plotly's
  // does, rather than making the page one long legend. A legend of a row or two (a desktop's) changes nothing.
  var MIN_PLOT_HEIGHT = 180;

  function keepPlotHeight(element) {
    var full = element._fullLayout;  // the figure as plotly laid it out; _size is its plot area
    if (!full || !full._size || !full.showlegend) return Promise.resolve();
    var shortBy = MIN_PLOT_HEIGHT - full._size.h;
    if (shortBy <= 0) return Promise.resolve();
    // The container grows and plotly follows it: a `height` in the layout turns plotly's autosize off, and the
    // chart then kept its first width when the phone turned or the window was resized.
    element.style.minHeight = (full.height + shortBy) + "px";
    // In pixels: as a fraction of the grown figure the legend would take the new room back.
    return window.Plotly.relayout(element, { "legend.maxheight": Math.max(full.height / 2, 30) }).then(function () {
      return window.Plotly.Plots.resize(element);
    });
  }

  function draw() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-figure]").forEach(function (element) {
      var source = document.getElementById(element.getAttribute("data-figure"));
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      if (figure.layout) fitDays(figure.data || [], figure.layout, element);
      var config = { responsive: true, displaylogo: false, displayModeBar: false };
      window.Plotly.newPlot(element, figure.data, fit(figure.layout, element), config).then(function () {
        return keepPlotHeight(element);
      }).then(function () {
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
