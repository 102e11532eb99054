// IO modules: the counters and states refreshed every second from
// GET /api/v1/modules (text only), and drag and drop of a chain's boxes as
// an enhancement of the Move up / Move down buttons: a drop posts the same
// order form the server takes (the chain's names, comma-separated).
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const live = document.getElementById("modules-live");
  if (live && window.homegw) {
    window.homegw.poll(live.dataset.url, 1000, function (data) {
      (data.modules || []).forEach(update);
    });
  }
  document.querySelectorAll("ol.pipeline").forEach(draggable);
});

function moduleCard(name) {
  return Array.from(document.querySelectorAll(".module[data-module]")).find((el) => el.dataset.module === name);
}

function update(module) {
  const card = moduleCard(module.name);
  if (!card) return;
  card.querySelectorAll("[data-counter]").forEach(function (cell) {
    const value = (module.counters || {})[cell.dataset.counter];
    if (value !== undefined) cell.textContent = String(value);
  });
  const enabled = card.querySelector('[data-field="enabled"]');
  if (enabled) enabled.textContent = module.enabled ? "Enabled" : "Disabled";
  const loaded = card.querySelector('[data-field="loaded"]');
  if (loaded) loaded.textContent = module.loaded ? "loaded" : "not loaded";
}

function draggable(list) {
  const form = document.querySelector('form.drag-order[data-nic="' + list.dataset.nic + '"]');
  if (!form) return;
  let dragged = null;
  list.querySelectorAll("li[data-module]").forEach(function (item) {
    item.draggable = true;
    item.addEventListener("dragstart", function (event) {
      dragged = item;
      item.classList.add("dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", item.dataset.module);
    });
    item.addEventListener("dragend", function () {
      item.classList.remove("dragging");
    });
    item.addEventListener("dragover", function (event) {
      if (dragged && dragged !== item) event.preventDefault();
    });
    item.addEventListener("drop", function (event) {
      event.preventDefault();
      if (!dragged || dragged === item) return;
      const box = item.getBoundingClientRect();
      const across = window.getComputedStyle(list).flexDirection.startsWith("row");
      const after = across ? event.clientX > box.left + box.width / 2 : event.clientY > box.top + box.height / 2;
      item.parentNode.insertBefore(dragged, after ? item.nextSibling : item);
      const names = Array.from(list.querySelectorAll("li[data-module]")).map((li) => li.dataset.module);
      form.querySelector('input[name="order"]').value = names.join(",");
      form.submit();
    });
  });
}
