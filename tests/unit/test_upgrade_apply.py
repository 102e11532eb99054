"""Applying a bundle to the inactive slot (a file as the partition, a real
grubenv through grub-editenv), the trial's confirm-or-reboot decision, the
whole A/B cycle with GRUB's rule of IMG_CONTRACT.md played by the test, and
the factory reset on an image and on a plain Debian install."""

from __future__ import annotations

import fcntl
import io
import json
from pathlib import Path

import pytest

from homegw.upgrade import slots
from homegw.upgrade.apply import apply_bundle, confirm, factory_reset
from homegw.upgrade.manifest import BundleRejected, UpgradeUnavailable
from tests.unit.upgrade_fakes import (
    PARTITION_SIZE,
    Image,
    SmallReads,
    bundle_of,
    make_image,
    manifest_of,
    new_key,
    rootfs_bytes,
    signature_of,
)

ROOTFS = rootfs_bytes()


@pytest.fixture
def image(tmp_path: Path) -> Image:
    return make_image(tmp_path / "image")


def grub_boots(image: Image) -> str:
    """GRUB's rule (image/ writes it in grub.cfg): boot the trial once, then
    fall back to the active slot."""
    env = image.env()
    trial, tried = env.get("homegw_trial"), env.get("homegw_tried")
    if trial and tried != "1":
        image.set_env("homegw_tried=1")
        slot = trial
    elif trial:
        image.set_env("homegw_tried=0")
        image.unset_env("homegw_trial")
        slot = env["homegw_active"]
    else:
        slot = env["homegw_active"]
    image.boot(slot)
    return slot


class Recorder:
    def __init__(self, states: list[str] | None = None) -> None:
        self.reboots = 0
        self.states = list(states or ["active"])
        self.asked = 0

    def reboot(self) -> None:
        self.reboots += 1

    def state(self) -> str:
        self.asked += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def run_confirm(image: Image, recorder: Recorder, deadline: float = 60.0) -> str:
    clock = FakeClock()
    return confirm(image.paths, recorder.reboot, recorder.state, deadline, clock, clock.pause)


def test_apply_writes_the_inactive_slot_and_marks_it_for_one_trial(image: Image) -> None:
    applied = apply_bundle(SmallReads(bundle_of(ROOTFS)), image.paths)
    assert (applied.slot, applied.version) == ("b", "0.1.1")
    assert image.slot_bytes("b", len(ROOTFS)) == ROOTFS
    assert image.slot_bytes("a", PARTITION_SIZE) == bytes(PARTITION_SIZE)  # the running one
    env = image.env()
    assert env["homegw_trial"] == "b" and env["homegw_tried"] == "0"
    assert env["homegw_active"] == "a" and env["homegw_version_b"] == "0.1.1"
    state = slots.describe(image.paths, slots.read_release(image.paths) or {})
    assert state["slots"]["a"]["version"] == "0.1.0"  # from the running image's release
    assert state["slots"]["b"]["version"] == "0.1.1" and state["trial"] == "b"


def test_a_hash_mismatch_leaves_the_slot_marked_bad_and_no_trial(image: Image) -> None:
    wrong = bundle_of(ROOTFS, manifest_of(rootfs_bytes(seed=9)))
    with pytest.raises(BundleRejected, match="sha256"):
        apply_bundle(io.BytesIO(wrong), image.paths)
    env = image.env()
    assert "homegw_trial" not in env and env["homegw_version_b"] == "bad"
    assert env["homegw_active"] == "a"


def test_a_bundle_refused_before_writing_leaves_the_slot_as_it_was(image: Image) -> None:
    image.set_env("homegw_version_b=0.0.9")
    other = bundle_of(ROOTFS, manifest_of(ROOTFS, compatible="homegw-arm64"))
    with pytest.raises(BundleRejected, match="homegw-arm64"):
        apply_bundle(io.BytesIO(other), image.paths)
    assert image.env()["homegw_version_b"] == "0.0.9" and "homegw_trial" not in image.env()
    assert image.slot_bytes("b", PARTITION_SIZE) == bytes(PARTITION_SIZE)


def test_compatible_is_the_image_releases(image: Image) -> None:
    image.paths.image_release.write_text("VERSION=0.1.0\nCOMPATIBLE=homegw-arm64\n")
    with pytest.raises(BundleRejected, match="this appliance is 'homegw-arm64'"):
        apply_bundle(io.BytesIO(bundle_of(ROOTFS)), image.paths)


def test_signature_required_when_the_image_has_a_key(image: Image, tmp_path: Path) -> None:
    private, _ = new_key(image.paths.keys, "release")
    with pytest.raises(BundleRejected, match="not signed"):
        apply_bundle(io.BytesIO(bundle_of(ROOTFS)), image.paths)
    assert "homegw_trial" not in image.env()
    document = manifest_of(ROOTFS)
    signed = bundle_of(ROOTFS, document, signature_of(json.dumps(document).encode(), private))
    assert apply_bundle(io.BytesIO(signed), image.paths).slot == "b"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda i: i.set_env("homegw_trial=b"), "on trial"),
        (lambda i: i.paths.image_release.unlink(), "not an image install"),
        (lambda i: i.boot("b"), "slot a is the active one"),
        (lambda i: i.paths.cmdline.write_text("root=/dev/sda1 ro\n"), "names no homegw.slot"),
    ],
)
def test_apply_refused_in_the_wrong_state(image: Image, setup, expected: str) -> None:  # type: ignore[no-untyped-def]
    setup(image)
    with pytest.raises(UpgradeUnavailable, match=expected):
        apply_bundle(io.BytesIO(bundle_of(ROOTFS)), image.paths)
    assert image.slot_bytes("b", PARTITION_SIZE) == bytes(PARTITION_SIZE)


def test_two_uploads_never_write_a_slot_at_once(image: Image) -> None:
    with image.paths.partition("b").open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(UpgradeUnavailable, match="being written"):
            apply_bundle(io.BytesIO(bundle_of(ROOTFS)), image.paths)
    assert apply_bundle(io.BytesIO(bundle_of(ROOTFS)), image.paths).slot == "b"


def test_confirm_on_trial_once_active(image: Image) -> None:
    image.set_env("homegw_trial=b", "homegw_tried=1")
    image.boot("b")
    recorder = Recorder(["activating", "activating", "active"])
    assert run_confirm(image, recorder) == "confirmed"
    env = image.env()
    assert env["homegw_active"] == "b" and env["homegw_tried"] == "0"
    assert "homegw_trial" not in env and recorder.reboots == 0 and recorder.asked == 3


def test_confirm_reboots_when_the_service_failed(image: Image) -> None:
    image.set_env("homegw_trial=b", "homegw_tried=1")
    image.boot("b")
    recorder = Recorder(["activating", "failed"])
    assert run_confirm(image, recorder) == "rebooted"
    assert recorder.reboots == 1
    env = image.env()
    assert env["homegw_active"] == "a" and env["homegw_trial"] == "b"  # GRUB falls back


def test_confirm_reboots_when_not_active_by_the_deadline(image: Image) -> None:
    image.set_env("homegw_trial=b", "homegw_tried=1")
    image.boot("b")
    recorder = Recorder(["activating"])
    assert run_confirm(image, recorder, deadline=30) == "rebooted"
    assert recorder.reboots == 1 and 14 <= recorder.asked <= 17  # every 2 s for 30 s


@pytest.mark.parametrize(
    "setup",
    [
        lambda i: None,  # booted the active slot, no trial
        lambda i: i.set_env("homegw_trial=b"),  # written, not booted yet (--no-reboot)
        lambda i: i.paths.image_release.unlink(),  # a plain Debian install
    ],
)
def test_confirm_does_nothing_when_not_on_a_trial(image: Image, setup) -> None:  # type: ignore[no-untyped-def]
    setup(image)
    before = image.env()
    recorder = Recorder(["failed"])
    assert run_confirm(image, recorder) == "nothing"
    assert recorder.reboots == 0 and recorder.asked == 0 and image.env() == before


def test_the_whole_cycle_upgrade_confirm_then_a_broken_one_rolls_back(image: Image) -> None:
    apply_bundle(io.BytesIO(bundle_of(ROOTFS)), image.paths)
    assert grub_boots(image) == "b"  # the trial boot
    assert run_confirm(image, Recorder(["active"])) == "confirmed"
    assert grub_boots(image) == "b"  # b is the active slot now
    image.paths.image_release.write_text("VERSION=0.1.1\nCOMPATIBLE=homegw-x86_64\n")
    third = rootfs_bytes(seed=3)
    assert apply_bundle(io.BytesIO(bundle_of(third)), image.paths).slot == "a"
    assert image.slot_bytes("a", len(third)) == third
    assert grub_boots(image) == "a"  # the trial of the third image
    recorder = Recorder(["failed"])
    assert run_confirm(image, recorder) == "rebooted" and recorder.reboots == 1
    assert grub_boots(image) == "b"  # rolled back by itself
    assert "homegw_trial" not in image.env() and image.env()["homegw_active"] == "b"
    assert run_confirm(image, Recorder(["active"])) == "nothing"


def test_factory_reset_on_an_image_flags_the_data_partition(image: Image, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "leases.json").write_text("{}")
    reset = factory_reset(image.paths, state, tmp_path / "homegw.yaml")
    assert reset.image and reset.reboot
    assert image.paths.reset_flag.is_file()
    assert (state / "leases.json").exists()  # /data is emptied at the next boot


def test_factory_reset_on_plain_debian_empties_state_and_restores_the_config(
    image: Image, tmp_path: Path
) -> None:
    image.paths.image_release.unlink()
    image.paths.default_config.write_text("wan: {interface: eth0}\n")
    state = tmp_path / "state"
    (state / "user-modules" / "sources").mkdir(parents=True)
    (state / "auth.json").write_text("{}")
    (state / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").mkdir()
    config = tmp_path / "homegw.yaml"
    config.write_text("wan: {interface: changed}\n")
    reset = factory_reset(image.paths, state, config)
    assert not reset.image and not reset.reboot and "restart homegw" in reset.message
    assert state.is_dir() and list(state.iterdir()) == []
    assert (tmp_path / "outside").is_dir()  # a link is removed, not followed
    assert config.read_text() == "wan: {interface: eth0}\n"
    assert not image.paths.reset_flag.exists()


def test_factory_reset_without_the_packaged_config_removes_nothing(
    image: Image, tmp_path: Path
) -> None:
    image.paths.image_release.unlink()
    state = tmp_path / "state"
    state.mkdir()
    (state / "auth.json").write_text("{}")
    with pytest.raises(UpgradeUnavailable, match="missing"):
        factory_reset(image.paths, state, tmp_path / "homegw.yaml")
    assert (state / "auth.json").exists()
