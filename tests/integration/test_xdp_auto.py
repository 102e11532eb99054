"""`dataplane.xdp_mode: auto`: native where the driver has it, generic where it refuses.

A veth has native XDP; an ifb device refuses it (EOPNOTSUPP on this kernel,
as virtio-net refuses with EINVAL/ENOMEM/E2BIG in some setups). The mode in
use is what `ip -d link` reports, not only what attach_xdp returns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from homegw import netns
from homegw.dataplane import attach
from tests.integration.xdp_nics import gateway_ns, prog_fd

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]
FIXTURES = (prog_fd,)  # xdp_nics' fixture, used here by name


def _veth_and_ifb(name: str) -> None:
    netns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1", ns=name)
    netns.ip("link", "add", "ifb0", "type", "ifb", ns=name)


@pytest.fixture
def ns(unique_tag: str) -> Iterator[str]:
    with gateway_ns(unique_tag, _veth_and_ifb) as name:
        yield name


def kernel_xdp_mode(ns: str, dev: str) -> str | None:
    """ip(8)'s view: 'xdp' (native), 'xdpgeneric', or None without a program."""
    link = json.loads(netns.ip("-j", "-d", "link", "show", "dev", dev, ns=ns))[0]
    xdp = link.get("xdp")
    return {1: "xdp", 2: "xdpgeneric"}.get(xdp["mode"]) if xdp else None


def test_auto_is_native_on_a_veth(ns: str, prog_fd: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=attach.__name__)
    with netns.in_netns(ns):
        assert attach.attach_xdp("v0", prog_fd, "auto") == "native"
        assert attach.attached_xdp_mode("v0") == "native"
    assert kernel_xdp_mode(ns, "v0") == "xdp"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with netns.in_netns(ns):
        attach.detach_xdp("v0", "auto")
    assert kernel_xdp_mode(ns, "v0") is None


def test_auto_falls_back_to_generic_once_with_the_reason(
    ns: str, prog_fd: int, caplog: pytest.LogCaptureFixture
) -> None:
    with netns.in_netns(ns):
        with pytest.raises(attach.AttachError, match="Operation not supported"):
            attach.attach_xdp("ifb0", prog_fd, "native")
        assert kernel_xdp_mode(ns, "ifb0") is None
        caplog.clear()
        assert attach.attach_xdp("ifb0", prog_fd, "auto") == "generic"
    assert kernel_xdp_mode(ns, "ifb0") == "xdpgeneric"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "ifb0: the driver refused native XDP (Operation not supported, errno 95): "
        "attaching generic XDP"
    ]
    with netns.in_netns(ns):
        # a restart with auto: the generic program there is replaced in place, no warning
        caplog.clear()
        assert attach.attach_xdp("ifb0", prog_fd, "auto") == "generic"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        attach.detach_xdp("ifb0", "auto")
    assert kernel_xdp_mode(ns, "ifb0") is None


def test_auto_replaces_a_generic_program_on_a_native_capable_nic(ns: str, prog_fd: int) -> None:
    with netns.in_netns(ns):
        assert attach.attach_xdp("v0", prog_fd, "generic") == "generic"
        assert attach.attach_xdp("v0", prog_fd, "auto") == "generic"
        attach.detach_xdp("v0", "auto")
    assert kernel_xdp_mode(ns, "v0") is None


def test_the_dataplane_reports_the_mode_each_nic_runs_in(ns: str, unique_tag: str) -> None:
    from homegw.dataplane.abi import Nic
    from homegw.dataplane.dataplane import Dataplane, purge_pins
    from homegw.virtualhome import pin_dir_for

    pin_dir = str(pin_dir_for(unique_tag))
    dataplane = Dataplane(pin_dir, {Nic.LAN: "v0", Nic.WAN: "ifb0"}, "auto")
    try:
        with netns.in_netns(ns):
            dataplane.load()
            dataplane.attach()
            assert dataplane.xdp_in_use == {Nic.LAN: "native", Nic.WAN: "generic"}
            assert (kernel_xdp_mode(ns, "v0"), kernel_xdp_mode(ns, "ifb0")) == ("xdp", "xdpgeneric")
            dataplane.detach()
        assert dataplane.xdp_in_use == {}
        assert (kernel_xdp_mode(ns, "v0"), kernel_xdp_mode(ns, "ifb0")) == (None, None)
    finally:
        dataplane.close()
        purge_pins(pin_dir)
