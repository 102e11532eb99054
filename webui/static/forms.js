// homegw web UI, the DHCP, DNS, Firewall & NAT and System pages: progressive
// enhancement only (every form works without this file).
"use strict";

// After "Restart homegw": wait until /healthz answers ready again, then go
// back to the System page (without this, the page has a link back).
(function waitForRestart() {
  const state = document.getElementById("restart-state");
  if (!state) return;
  const health = state.dataset.health;
  const back = state.dataset.back;
  let sawDown = false;
  const started = Date.now();
  function poll() {
    fetch(health, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (response.ok && (sawDown || Date.now() - started > 15000)) {
          window.location.assign(back);
          return;
        }
        if (!response.ok) sawDown = true;
        window.setTimeout(poll, 1000);
      })
      .catch(function () {
        sawDown = true;
        state.textContent = "homegw is restarting… waiting for it to answer.";
        window.setTimeout(poll, 1000);
      });
  }
  window.setTimeout(poll, 1000);
})();
