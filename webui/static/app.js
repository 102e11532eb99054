// homegw web UI: progressive enhancement only (every page works without it).
// Shared helpers (window.homegw) and the enhancements of every page: fields
// shown only for one choice of a <select>, and live filtering of table rows.
// Data from the gateway goes into the page as textContent, never as HTML.
"use strict";

(function () {
  const UNITS = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];

  function formatRate(bytesPerSecond) {
    let value = bytesPerSecond * 8;
    let unit = 0;
    while (value >= 1000 && unit < UNITS.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return (unit === 0 ? Math.round(value) : value.toFixed(1)) + " " + UNITS[unit];
  }

  function formatBytes(bytes) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return (unit === 0 ? Math.round(value) : value.toFixed(1)) + " " + units[unit];
  }

  // Calls onData(json) every `everyMs` while the page is visible; a 401 (the
  // session ended) reloads the page, which then asks for the login.
  function poll(url, everyMs, onData) {
    let stopped = false;
    async function once() {
      if (document.hidden) return;
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (response.status === 401) {
        stopped = true;
        window.location.reload();
        return;
      }
      if (response.ok) onData(await response.json(), Date.now() / 1000);
    }
    async function loop() {
      try {
        await once();
      } catch (error) {
        // the gateway restarts or the network hiccups: try again later
      }
      if (!stopped) window.setTimeout(loop, everyMs);
    }
    loop();
  }

  // <div data-show-when="wan_mode=static">: shown only while the select
  // named wan_mode has that value (without JS it is always shown).
  function showWhen() {
    document.querySelectorAll("[data-show-when]").forEach(function (block) {
      const [name, wanted] = block.dataset.showWhen.split("=");
      const select = document.querySelector('select[name="' + name + '"]');
      if (!select) return;
      const update = function () {
        block.hidden = select.value !== wanted;
      };
      select.addEventListener("change", update);
      update();
    });
  }

  // <input data-filter-rows="tbody-id">: hides the rows of this page that do
  // not contain the typed text (the search button still asks the server).
  function filterRows() {
    document.querySelectorAll("input[data-filter-rows]").forEach(function (input) {
      const body = document.getElementById(input.dataset.filterRows);
      if (!body) return;
      input.addEventListener("input", function () {
        const wanted = input.value.trim().toLowerCase();
        body.querySelectorAll("tr").forEach(function (row) {
          row.hidden = wanted !== "" && !row.textContent.toLowerCase().includes(wanted);
        });
      });
    });
  }

  // A chart that follows its container's width.
  function chart(options, data, element) {
    const width = function () {
      return Math.max(element.clientWidth, 200);
    };
    const plot = new window.uPlot(Object.assign({ width: width() }, options), data, element);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        plot.setSize({ width: width(), height: options.height });
      }).observe(element);
    }
    return plot;
  }

  window.homegw = { formatRate, formatBytes, poll, chart };
  document.addEventListener("DOMContentLoaded", function () {
    showWhen();
    filterRows();
  });
})();
