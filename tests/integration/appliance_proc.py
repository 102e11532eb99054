"""Run `homegw run` in the virtual home's gateway namespace and watch its log."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from homegw.netns import in_netns
from homegw.virtualhome import VirtualHome

HEALTH_POLL_S = 0.02


class ApplianceProcess:
    def __init__(self, home: VirtualHome, config: dict[str, Any], name: str = "homegw") -> None:
        self.home = home
        self.config_path = Path(home.state_dir) / f"{name}.yaml"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        self.config = config
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> ApplianceProcess:
        """Start `homegw run` (again, after stop() or kill(): a restart; the
        log goes on)."""
        # home.popen keeps the machine's bpffs visible in the gateway namespace,
        # so pinned maps outlive the process as they do on a real gateway.
        argv = [sys.executable, "-m", "homegw", "run", "-c", str(self.config_path)]
        self.proc = self.home.popen(
            "gw", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        self.proc.wait()  # so that exited() is true when waiters wake up
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """Block until a log line matches `pattern`; fail if the process exits first."""
        regex = re.compile(pattern)
        with self._changed:
            ok = self._changed.wait_for(
                lambda: any(regex.search(x) for x in self.lines) or self.exited(), timeout
            )
            match = next((x for x in self.lines if regex.search(x)), None)
        if match is None:
            state = "exited" if self.exited() else ("timed out" if not ok else "no match")
            raise AssertionError(f"no log line /{pattern}/ ({state}); log:\n{self.log}")
        return match

    def wait_for_count(self, pattern: str, count: int, timeout: float = 60) -> None:
        """Block until `count` log lines match `pattern`."""
        regex = re.compile(pattern)

        def enough() -> bool:
            return sum(1 for x in self.lines if regex.search(x)) >= count or self.exited()

        with self._changed:
            self._changed.wait_for(enough, timeout)
            seen = sum(1 for x in self.lines if regex.search(x))
        assert seen >= count, f"{seen} of {count} /{pattern}/ lines; log:\n{self.log}"

    def health_url(self) -> str:
        listen = self.config.get("webui", {}).get("listen", "192.168.1.1:80")
        return f"http://{listen}/healthz"

    def health(self) -> dict[str, Any] | None:
        """/healthz's answer when it is 200 (asked from the gateway's namespace)."""
        with in_netns(self.home.ns("gw")):
            try:
                with urllib.request.urlopen(self.health_url(), timeout=1) as answer:
                    return json.loads(answer.read())
            except (OSError, urllib.error.URLError, ValueError):
                return None

    def wait_healthy(self, timeout: float = 60, wan: bool = False) -> dict[str, Any]:
        """Block until /healthz answers 200 (and, with `wan`, reports a WAN
        address); fail if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.exited():
            state = self.health()
            if state is not None and (not wan or (state.get("wan") or {}).get("address")):
                return state
            time.sleep(HEALTH_POLL_S)  # polling an HTTP state, not a fixed wait
        raise AssertionError(
            f"/healthz never answered ready (exited: {self.exited()}):\n{self.log}"
        )

    def kill(self) -> None:
        """kill -9: nothing of the process's own shutdown runs."""
        assert self.proc
        self.proc.kill()
        self.proc.wait(30)
        self._reader.join(30)

    def rss_kib(self) -> int:
        assert self.proc
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]

    def mapped_files(self) -> set[str]:
        """The files mapped into the process (its libraries)."""
        assert self.proc
        lines = Path(f"/proc/{self.proc.pid}/maps").read_text().splitlines()
        return {line.split()[-1] for line in lines if len(line.split()) >= 6}

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, timeout: float = 30) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(timeout)  # the last lines are in self.lines after this
        return code
