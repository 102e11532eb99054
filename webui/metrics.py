"""/metrics: Prometheus text from control.samples() (every module's
counters, named by the appliance) plus the process's own RSS and start count.

Each scrape reads the samples anew (a custom collector on a registry of our
own, not prometheus_client's global one). A sample the exposition format
cannot carry (a bad name or value, labels that differ from its family's) is left out
and counted in homegw_metrics_dropped_samples_total, never a failed scrape.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from homegw.atomicfile import write_atomic
from homegw.control import Control, Sample

log = logging.getLogger(__name__)

PREFIX = "homegw_"
STARTS_FILE = "starts"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def count_start(state_dir: Path) -> int:
    """Add this start to the count kept in state_dir; the new count."""
    path = Path(state_dir) / STARTS_FILE
    try:
        count = int(path.read_text().strip()) + 1
    except (FileNotFoundError, ValueError):
        count = 1
    write_atomic(path, f"{count}\n".encode(), mode=0o644)
    return count


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class _Families:
    def __init__(self) -> None:
        self.by_name: dict[str, tuple[Metric, tuple[str, ...]]] = {}
        self.dropped = 0

    def add(self, sample: Sample) -> None:
        name = PREFIX + sample.name
        labels = tuple(sorted(sample.labels))
        try:
            value = float(sample.value)
        except (TypeError, ValueError):
            value = None
        if (
            value is None
            or not _NAME.match(sample.name)
            or not all(_NAME.match(label) for label in labels)
        ):
            self.dropped += 1
            return
        known = self.by_name.get(name)
        if known is None:
            kind = CounterMetricFamily if sample.kind == "counter" else GaugeMetricFamily
            known = (kind(name, sample.help, labels=list(labels)), labels)
            self.by_name[name] = known
        family, family_labels = known
        if labels != family_labels:
            self.dropped += 1
            return
        family.add_metric([str(sample.labels[label]) for label in labels], value)


class SamplesCollector:
    def __init__(self, control: Control, starts: int) -> None:
        self.control = control
        self.starts = starts
        self.started_at = time.time()
        self.scrape_errors = 0

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        try:
            for sample in self.control.samples():
                families.add(sample)
        except Exception:
            self.scrape_errors += 1
            log.exception("reading the appliance's samples failed")
        if families.dropped:
            log.warning("metrics: %d sample(s) left out (bad name or labels)", families.dropped)
        yield from (family for family, _labels in families.by_name.values())
        yield from self._own(families.dropped)

    def _own(self, dropped: int) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            PREFIX + "process_resident_memory_bytes", "RSS of the appliance", resident_bytes()
        )
        yield GaugeMetricFamily(
            PREFIX + "process_start_time_seconds", "when it started (unix)", self.started_at
        )
        yield CounterMetricFamily(
            PREFIX + "starts", "starts of the appliance with this state_dir", self.starts
        )
        yield CounterMetricFamily(
            PREFIX + "metrics_scrape_errors", "scrapes whose samples() raised", self.scrape_errors
        )
        yield GaugeMetricFamily(
            PREFIX + "metrics_dropped_samples", "samples left out of this scrape", dropped
        )


def registry(control: Control, state_dir: Path) -> CollectorRegistry:
    own = CollectorRegistry(auto_describe=False)
    own.register(SamplesCollector(control, count_start(state_dir)))
    return own


def exposition(own: CollectorRegistry) -> bytes:
    return generate_latest(own)
