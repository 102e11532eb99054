// A device's page: its traffic per app, the last 24 hours by hour or the
// last 7 days by day (the buttons switch; the page carries both charts'
// data in data-day and data-week). Bars are stacked: each app's bar sits on
// the apps before it; the legend shows each app's own bytes. App names are
// data: uPlot sets them as text.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const element = document.getElementById("app-usage");
  if (!element || !window.uPlot || !window.homegw) return;
  const COLOURS = ["#1f6feb", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#0a7e8c", "#6e7781"];
  const read = function (name) {
    try {
      return JSON.parse(element.dataset[name] || "{}");
    } catch (error) {
      return { times: [], series: [] };
    }
  };
  const periods = { day: read("day"), week: read("week") };
  const bytesLabel = function (self, value) {
    return value == null ? "–" : window.homegw.formatBytes(value);
  };
  const bars = window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.8, 40] }) : undefined;
  let plot = null;

  // uPlot draws each series from 0: the stack is drawn top first, each bar
  // up to the sum of its app and those under it.
  function stacked(chart) {
    const sums = chart.series.map(function () {
      return [];
    });
    let running = (chart.times || []).map(function () {
      return 0;
    });
    chart.series.forEach(function (entry, i) {
      running = running.map(function (sum, t) {
        return sum + (entry.values[t] || 0);
      });
      sums[i] = running.slice();
    });
    return sums;
  }

  function draw(name) {
    const chart = periods[name] || { times: [], series: [] };
    const sums = stacked(chart);
    const order = chart.series.map((entry, i) => i).reverse();
    const series = [{}].concat(
      order.map(function (i) {
        const colour = COLOURS[i % COLOURS.length];
        const own = chart.series[i].values;
        return {
          label: chart.series[i].label,
          stroke: colour,
          fill: colour,
          paths: bars,
          points: { show: false },
          value: function (self, value, s, idx) {
            return idx == null ? "–" : bytesLabel(self, own[idx]);
          },
        };
      }),
    );
    const data = [chart.times || []].concat(order.map((i) => sums[i]));
    if (plot) plot.destroy();
    element.textContent = "";
    plot = window.homegw.chart(
      {
        height: 240,
        scales: { x: { time: true } },
        series: series,
        axes: [{}, { size: 70, values: (self, ticks) => ticks.map((t) => window.homegw.formatBytes(t)) }],
      },
      data,
      element,
    );
  }

  const buttons = document.querySelectorAll("#usage-periods button[data-period]");
  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      buttons.forEach(function (other) {
        other.setAttribute("aria-pressed", String(other === button));
      });
      draw(button.dataset.period);
    });
  });
  const group = document.getElementById("usage-periods");
  if (group) group.hidden = false;
  draw("day");
});
