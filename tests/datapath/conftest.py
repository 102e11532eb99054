"""Fixtures for datapath tests: a dataplane on a private pin dir, not attached."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from homegw.dataplane.dataplane import Dataplane, purge_pins


@pytest.fixture
def pin_dir() -> Iterator[str]:
    path = f"/sys/fs/bpf/homegw-test-{secrets.token_hex(3)}"
    yield path
    purge_pins(path)


@pytest.fixture
def dataplane(pin_dir: str) -> Iterator[Dataplane]:
    dp = Dataplane(pin_dir, {})
    dp.load()
    yield dp
    dp.close()
