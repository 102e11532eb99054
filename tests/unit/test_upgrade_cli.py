"""`homegw upgrade status|apply|confirm` and `homegw factory-reset` over an
image's files in a temp dir (the CLI's paths and its reboot replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from homegw.cli import main
from homegw.upgrade import cli as upgrade_cli
from tests.unit.upgrade_fakes import Image, bundle_of, make_image, manifest_of, rootfs_bytes

ROOTFS = rootfs_bytes()


@pytest.fixture
def image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Image:
    image = make_image(tmp_path / "image")
    monkeypatch.setattr(upgrade_cli, "SlotPaths", lambda: image.paths)
    return image


@pytest.fixture
def reboots(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(upgrade_cli, "reboot_now", lambda: calls.append("reboot"))
    return calls


def test_status_shows_version_slots_and_trial(
    image: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    image.set_env("homegw_version_b=bad")
    assert main(["upgrade", "status"]) == 0
    out = capsys.readouterr().out
    assert "image: 0.1.0 build 20261201T000000Z (homegw-x86_64)" in out
    assert "booted: a  active: a  trial: none" in out
    assert "slot a: 0.1.0  (booted)" in out
    assert "slot b: bad (its last write did not complete)" in out


def test_apply_writes_then_reboots_unless_told_not_to(
    image: Image, tmp_path: Path, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "homegw-0.1.1.hgwup"
    bundle.write_bytes(bundle_of(ROOTFS))
    assert main(["upgrade", "apply", str(bundle), "--no-reboot"]) == 0
    assert reboots == [] and image.env()["homegw_trial"] == "b"
    assert "slot b now holds homegw 0.1.1" in capsys.readouterr().out
    assert main(["upgrade", "status"]) == 0
    assert "trial: b" in capsys.readouterr().out
    assert main(["upgrade", "apply", str(bundle)]) == 1  # a trial is pending
    assert "on trial" in capsys.readouterr().err
    image.unset_env("homegw_trial")
    assert main(["upgrade", "apply", str(bundle)]) == 0 and reboots == ["reboot"]


def test_apply_of_a_bad_bundle_says_why(
    image: Image, tmp_path: Path, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bad.hgwup"
    bundle.write_bytes(bundle_of(ROOTFS, manifest_of(rootfs_bytes(seed=5))))
    assert main(["upgrade", "apply", str(bundle)]) == 1
    assert "sha256" in capsys.readouterr().err and reboots == []
    assert "homegw_trial" not in image.env()


def test_confirm_prints_what_it_did(
    image: Image, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["upgrade", "confirm", "--deadline", "1"]) == 0
    assert capsys.readouterr().out.strip() == "nothing" and reboots == []


def test_factory_reset_needs_yes_then_flags_and_reboots(
    image: Image, tmp_path: Path, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "homegw.yaml"
    assert main(["factory-reset", "-c", str(config)]) == 2
    assert not image.paths.reset_flag.exists() and reboots == []
    assert main(["factory-reset", "--yes", "-c", str(config)]) == 0
    assert image.paths.reset_flag.is_file() and reboots == ["reboot"]


def test_factory_reset_on_plain_debian_uses_the_configs_state_dir(
    image: Image, tmp_path: Path, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    image.paths.image_release.unlink()
    image.paths.default_config.write_text("# packaged default\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "secret").write_text("x")
    config = tmp_path / "homegw.yaml"
    config.write_text(f"wan: {{interface: wan0}}\nlan: {{interface: lan0}}\nstate_dir: {state}\n")
    assert main(["factory-reset", "--yes", "-c", str(config)]) == 0
    assert list(state.iterdir()) == [] and config.read_text() == "# packaged default\n"
    assert "systemctl restart homegw" in capsys.readouterr().out and reboots == []
