"""Shared pytest set-up: privilege checks and the virtual home fixtures.

Tests under integration/, datapath/, browser/ and image/ (or marked `netns`) need
root, `ip netns` and bpffs. When any such test is collected and the machine
cannot run it, the session stops with an error instead of skipping silently.

Fixtures:
- `unique_tag`: a short tag ("t" + 4 hex digits) no existing namespace uses.
- `virtual_home`: a built VirtualHome per test, torn down afterwards.
  Parametrize indirectly to pass constructor options, e.g.
  `@pytest.mark.parametrize("virtual_home", [{"lan_hosts_static": False}], indirect=True)`.
- `virtual_home_module`: the same, shared by the tests of one module.
- `make_virtual_home`: a factory for tests that need several homes or options.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from homegw import netns
from homegw.virtualhome import VirtualHome, leftovers

PRIVILEGED_DIRS = ("integration", "datapath", "browser", "image")
TESTS_ROOT = Path(__file__).parent


def _needs_privileges(item: pytest.Item) -> bool:
    if item.get_closest_marker("netns"):
        return True
    try:
        rel = item.path.relative_to(TESTS_ROOT)
    except ValueError:
        return False
    return rel.parts[0] in PRIVILEGED_DIRS


def _privilege_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append(f"not running as root (euid {os.geteuid()})")
    if shutil.which("ip") is None:
        problems.append("`ip` (iproute2) not found")
    else:
        probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        if probe.returncode != 0:
            problems.append(f"`ip netns list` failed: {probe.stderr.strip()}")
    return problems


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark namespace tests and stop loudly if the machine cannot run them."""
    privileged = [item for item in items if _needs_privileges(item)]
    for item in privileged:
        item.add_marker(pytest.mark.netns)
    if privileged and (problems := _privilege_problems()):
        pytest.exit(
            f"{len(privileged)} collected tests need root and network namespaces, but: "
            + "; ".join(problems)
            + ". Run as root on the test machine (see scripts/setup.sh), "
            "or select only tests/unit.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def new_tag() -> str:
    """A fresh tag ("t" + 4 hex digits) that no existing namespace uses."""
    in_use = {name.split("-")[1] for name in netns.list_netns() if name.startswith("hgw-")}
    while (tag := "t" + secrets.token_hex(2)) in in_use:
        pass
    return tag


@pytest.fixture
def unique_tag() -> str:
    """A short unique tag for namespaces, interfaces and pin dirs of one test."""
    return new_tag()


def _built_home(tag: str, options: dict[str, Any]) -> Iterator[VirtualHome]:
    home = VirtualHome(tag, **options)
    try:
        home.build()
        yield home
    finally:
        home.teardown()
    left = leftovers(tag)
    assert not left, f"virtual home {tag} left behind: {left}"


@pytest.fixture
def virtual_home(request: pytest.FixtureRequest, unique_tag: str) -> Iterator[VirtualHome]:
    """A built VirtualHome for one test (options via indirect parametrization)."""
    yield from _built_home(unique_tag, getattr(request, "param", None) or {})


@pytest.fixture(scope="module")
def virtual_home_module(request: pytest.FixtureRequest) -> Iterator[VirtualHome]:
    """A built VirtualHome shared by the tests of one module."""
    yield from _built_home(new_tag(), getattr(request, "param", None) or {})


@pytest.fixture
def make_virtual_home() -> Iterator[Callable[..., VirtualHome]]:
    """Factory: `make_virtual_home(**options)` builds a home; all are torn down after."""
    homes: list[VirtualHome] = []

    def make(**options: Any) -> VirtualHome:
        home = VirtualHome(new_tag(), **options)
        homes.append(home)
        return home.build()

    yield make
    for home in homes:
        home.teardown()
    left = [item for home in homes for item in leftovers(home.tag)]
    assert not left, f"virtual homes left behind: {left}"
