// User IO modules (progressive enhancement: every form works without it):
// - the states, counters and trial countdowns kept live from
//   GET /api/v1/modules (its user_modules), text only;
// - a chosen source file read into the source textarea (so it can be
//   edited before the upload);
// - after a refusal, the refused line of the source selected in the textarea.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[type=file][data-into]").forEach(readIntoTextarea);
  document.querySelectorAll("textarea[data-refused-line]").forEach(selectRefusedLine);
  const countdowns = Array.from(document.querySelectorAll(".countdown[data-remaining]"));
  const started = Date.now();
  countdowns.forEach(function (el) {
    el.dataset.deadline = String(started + Number(el.dataset.remaining) * 1000);
  });
  if (countdowns.length) window.setInterval(tick, 1000);
  const live = document.getElementById("modules-live");
  if (live && window.homegw && document.querySelector("[data-user-module]")) {
    window.homegw.poll(live.dataset.url, 1000, function (data) {
      // an answer without the list says nothing about user modules
      if (Array.isArray(data.user_modules)) updateAll(data.user_modules);
    });
  }
});

function byName(selector, attribute, name) {
  return Array.from(document.querySelectorAll(selector)).filter((el) => el.getAttribute(attribute) === name);
}

function tick() {
  document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
    const left = Math.max(0, Math.round((Number(el.dataset.deadline) - Date.now()) / 1000));
    el.textContent = left + " s left";
  });
}

function updateAll(modules) {
  const seen = new Set();
  modules.forEach(function (module) {
    seen.add(module.name);
    update(module);
  });
  document.querySelectorAll("section.user-module[data-user-module]").forEach(function (card) {
    if (!seen.has(card.dataset.userModule)) gone(card.dataset.userModule);
  });
}

function update(module) {
  byName("[data-user-state]", "data-user-state", module.name).forEach(function (badge) {
    badge.textContent = module.state;
    badge.className = "badge user-state state-" + module.state;
  });
  byName("section.user-module", "data-user-module", module.name).forEach(function (card) {
    card.querySelectorAll("[data-user-counter]").forEach(function (cell) {
      const value = (module.counters || {})[cell.dataset.userCounter];
      if (value !== undefined) cell.textContent = String(value);
    });
    const trial = card.querySelector("[data-trial]");
    if (!trial) return;
    trial.hidden = !module.trial;
    const countdown = trial.querySelector(".countdown");
    if (module.trial && countdown) {
      countdown.dataset.deadline = String(Date.now() + Number(module.trial.remaining_s) * 1000);
    }
    (module.trial ? module.trial.checks || [] : []).forEach(function (check) {
      const item = Array.from(trial.querySelectorAll("[data-check]")).find((li) => li.dataset.check === check.name);
      if (!item) return;
      const badge = item.querySelector(".badge");
      const word = check.ok === true ? "ok" : check.ok === false ? "failing" : "not checked";
      badge.textContent = check.name + ": " + word;
      badge.className = "badge " + (check.ok === true ? "ok" : check.ok === false ? "bad" : "");
      item.querySelector(".muted").textContent = check.detail || "";
    });
  });
}

function gone(name) {
  byName("[data-user-state]", "data-user-state", name).forEach(function (badge) {
    badge.textContent = "removed";
    badge.className = "badge user-state state-removed";
  });
  byName("section.user-module", "data-user-module", name).forEach(function (card) {
    card.querySelectorAll("[data-trial], form, a.button").forEach(function (el) {
      el.hidden = true;
    });
  });
}

function readIntoTextarea(input) {
  const area = document.getElementById(input.dataset.into);
  if (!area) return;
  input.addEventListener("change", function () {
    const file = input.files && input.files[0];
    if (!file) return;
    file.text().then(function (text) {
      area.value = text;
      input.value = ""; // the textarea (perhaps edited) is what goes up
      area.focus();
    });
  });
}

function selectRefusedLine(area) {
  const line = Number(area.dataset.refusedLine);
  if (!line) return;
  const lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
  const end = start + (lines[line - 1] || "").length;
  area.focus();
  area.setSelectionRange(start, end);
  const height = area.scrollHeight / Math.max(lines.length, 1);
  area.scrollTop = Math.max(0, (line - 3) * height);
}
