"""Start time and memory of the appliance, started in the virtual home's
gateway namespace as the demo starts it (`homegw run` under nsenter, every
module on, WAN by DHCP from the ISP namespace).

    sudo PYTHONPATH=$PWD .venv/bin/python bench/startup_bench.py [--warm N]

Prints:
- cold start: the pin dir empty (no build cached), from spawning `homegw run`
  to /healthz answering 200;
- warm restart: SIGTERM, wait for the exit, spawn again, to /healthz 200
  (nothing changed: every build reused), the median of N;
- steady RSS of the appliance process (VmRSS, its build children gone),
  after the WAN lease is applied, and what is heavy in it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from homegw.virtualhome import VirtualHome  # noqa: E402
from tests.conftest import new_tag  # noqa: E402
from tests.integration.appliance_proc import ApplianceProcess  # noqa: E402

SETTLE_S = 5.0  # RSS is sampled over this long once the WAN lease is in


def timed_start(app: ApplianceProcess) -> float:
    began = time.monotonic()
    app.start()
    app.wait_healthy(timeout=120)
    return time.monotonic() - began


def steady_rss_kib(app: ApplianceProcess) -> int:
    app.wait_healthy(timeout=60, wan=True)
    deadline = time.monotonic() + SETTLE_S
    samples = []
    while time.monotonic() < deadline:
        samples.append(app.rss_kib())
        time.sleep(0.5)  # sampling interval of a measurement
    return max(samples)


def heavy_mappings(app: ApplianceProcess) -> list[str]:
    return sorted(f for f in app.mapped_files() if f.endswith(".so") or ".so." in f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", type=int, default=3, help="warm restarts to measure")
    args = parser.parse_args()
    home = VirtualHome(new_tag(), n_hosts=1)
    home.build()
    try:
        app = ApplianceProcess(home, home.gateway_config())
        cold = timed_start(app)
        rss = steady_rss_kib(app)
        libraries = heavy_mappings(app)
        warm = []
        for _ in range(args.warm):
            assert app.stop() == 0, app.log
            warm.append(timed_start(app))
        app.stop()
    finally:
        home.teardown()
    print(f"cold start (no cached build): {cold:.2f} s to /healthz 200")
    print(f"warm restart (builds reused): {statistics.median(warm):.2f} s median of {warm}")
    print(f"steady RSS, every module on:  {rss / 1024:.1f} MiB")
    bcc = [lib for lib in libraries if "bcc" in lib or "LLVM" in lib or "clang" in lib]
    print(f"bcc/LLVM mapped in the appliance: {bcc or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
