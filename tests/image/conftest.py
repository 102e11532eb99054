"""The built image the tests boot: image/build.sh once per session into a temp
dir, or a prebuilt one named by HOMEGW_IMAGE_DIR (its output directory)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 3600


@dataclass(frozen=True)
class BuiltImage:
    directory: Path
    version: str

    @property
    def qcow2(self) -> Path:
        return self.directory / f"homegw-{self.version}.qcow2"

    @property
    def raw(self) -> Path:
        return self.directory / f"homegw-{self.version}.raw"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"


def _version_in(directory: Path) -> str:
    [bundle] = directory.glob("homegw-*.hgwup")
    match = re.fullmatch(r"homegw-(.+)\.hgwup", bundle.name)
    assert match, bundle
    return match.group(1)


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    prebuilt = os.environ.get("HOMEGW_IMAGE_DIR")
    if prebuilt:
        directory = Path(prebuilt)
    else:
        directory = tmp_path_factory.mktemp("image")
        subprocess.run(
            ["bash", str(REPO / "image/build.sh"), "--out", str(directory)],
            cwd=REPO,
            check=True,
            timeout=BUILD_TIMEOUT_S,
        )
    return BuiltImage(directory, _version_in(directory))
