// Parental controls: a search box over each app picker (hidden without
// JavaScript, where every category can still be opened). Typing keeps the
// apps whose name contains the text, opens the categories that have one and
// hides the others; an empty box shows everything again, as it was.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-search-for]").forEach(function (box) {
    const groups = document.getElementById(box.dataset.searchFor);
    const input = box.querySelector("input[type=search]");
    if (!groups || !input) return;
    box.hidden = false;
    const wasOpen = new Map();
    groups.querySelectorAll("details").forEach(function (group) {
      wasOpen.set(group, group.open);
    });
    input.addEventListener("input", function () {
      const wanted = input.value.trim().toLowerCase();
      groups.querySelectorAll("details").forEach(function (group) {
        let found = 0;
        group.querySelectorAll(".picks label").forEach(function (label) {
          const match = wanted === "" || label.textContent.toLowerCase().includes(wanted);
          label.hidden = !match;
          if (match) found += 1;
        });
        const title = group.querySelector("summary").textContent.toLowerCase();
        const groupMatch = wanted !== "" && title.includes(wanted);
        if (groupMatch) {
          group.querySelectorAll(".picks label").forEach(function (label) {
            label.hidden = false;
          });
        }
        group.hidden = wanted !== "" && found === 0 && !groupMatch;
        group.open = wanted === "" ? wasOpen.get(group) : found > 0 || groupMatch;
      });
    });
  });
});
