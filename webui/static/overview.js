// Overview: the live throughput graph. Polls GET /api/v1/status every
// second; the rates are computed here from the NICs' byte counters:
// download = bytes received on the WAN, upload = bytes received on the LAN
// (what the home sends). The graph keeps the last 5 minutes.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const element = document.getElementById("throughput");
  if (!element || !window.uPlot || !window.homegw) return;
  const keep = Number(element.dataset.seconds) || 300;
  const times = [];
  const down = [];
  const up = [];
  let last = null;
  const rateLabel = function (self, value) {
    return value == null ? "–" : window.homegw.formatRate(value);
  };
  const plot = window.homegw.chart(
    {
      height: 220,
      scales: { x: { time: true }, y: { range: (self, min, max) => [0, Math.max(max, 1000)] } },
      series: [
        {},
        { label: "Download", stroke: "#1f6feb", fill: "rgba(31,111,235,0.12)", value: rateLabel },
        { label: "Upload", stroke: "#1a7f37", value: rateLabel },
      ],
      axes: [{}, { size: 80, values: (self, ticks) => ticks.map((t) => window.homegw.formatRate(t)) }],
    },
    [times, down, up],
    element,
  );
  const readings = function (status) {
    const nics = status.nics || {};
    return { down: (nics.wan || {}).rx_bytes, up: (nics.lan || {}).rx_bytes };
  };
  window.homegw.poll(element.dataset.statusUrl, 1000, function (status, now) {
    const now_ = readings(status);
    if (last && now > last.time && now_.down >= last.down && now_.up >= last.up) {
      const seconds = now - last.time;
      times.push(now);
      down.push((now_.down - last.down) / seconds);
      up.push((now_.up - last.up) / seconds);
      while (times.length && times[0] < now - keep) {
        times.shift();
        down.shift();
        up.shift();
      }
      plot.setData([times, down, up]);
      document.getElementById("rate-in").textContent = window.homegw.formatRate(down[down.length - 1]);
      document.getElementById("rate-out").textContent = window.homegw.formatRate(up[up.length - 1]);
    }
    if (typeof now_.down === "number" && typeof now_.up === "number") {
      last = { time: now, down: now_.down, up: now_.up };
    }
    if (typeof status.uptime_s === "number") {
      document.getElementById("uptime").textContent = duration(status.uptime_s);
    }
    if (status.wan) {
      const state = document.getElementById("wan-state");
      const up = status.wan.state === "up";
      const text = String(status.wan.state || "unknown");
      state.textContent = up ? "Connected" : text.charAt(0).toUpperCase() + text.slice(1);
      state.className = "big state-" + (up ? "up" : "down");
      document.getElementById("wan-address").textContent = status.wan.address || "–";
    }
  });
});

// Seconds as the page shows them (webui.views.common.format_duration).
function duration(value) {
  const seconds = Math.floor(value);
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  if (days) return days + (days === 1 ? " day " : " days ") + hours + " h";
  if (hours) return hours + " h " + minutes + " min";
  return minutes ? minutes + " min " + (seconds % 60) + " s" : seconds + " s";
}
