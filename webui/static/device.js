// A device's page: its traffic in the last 24 hours, from the hourly
// buckets the page carries in data-history (sent and received per hour).
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const element = document.getElementById("history");
  if (!element || !window.uPlot || !window.homegw) return;
  let history = [];
  try {
    history = JSON.parse(element.dataset.history || "[]");
  } catch (error) {
    return;
  }
  const bytesLabel = function (self, value) {
    return value == null ? "–" : window.homegw.formatBytes(value);
  };
  const bars = window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.8, 40] }) : undefined;
  window.homegw.chart(
    {
      height: 220,
      scales: { x: { time: true } },
      series: [
        {},
        { label: "Received", stroke: "#1f6feb", fill: "rgba(31,111,235,0.35)", paths: bars, value: bytesLabel },
        { label: "Sent", stroke: "#1a7f37", fill: "rgba(26,127,55,0.35)", paths: bars, value: bytesLabel },
      ],
      axes: [{}, { size: 70, values: (self, ticks) => ticks.map((t) => window.homegw.formatBytes(t)) }],
    },
    [history.map((b) => b.hour), history.map((b) => b.to_bytes), history.map((b) => b.from_bytes)],
    element,
  );
});
