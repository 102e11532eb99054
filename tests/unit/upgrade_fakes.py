"""What the upgrade tests share: bundles made by hand (every member, order
and header a hostile bundle could have), keys, a stream that refuses big
reads, and an image's files (a partition file per slot, a real grubenv)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from homegw.upgrade.bundle import CHUNK
from homegw.upgrade.slots import SlotPaths

PARTITION_SIZE = 1 << 20


def rootfs_bytes(size: int = 300_000, seed: int = 1) -> bytes:
    """Compressible but not trivial content (a real image is mostly blocks)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 128  # 4 KiB
    return (block + bytes(4096)) * (size // 8192) + block[: size % 8192]


def manifest_of(image: bytes, **changes: Any) -> dict[str, Any]:
    document = {
        "format": 1,
        "compatible": "homegw-x86_64",
        "version": "0.1.1",
        "build": "20261202T060000Z",
        "rootfs": {
            "file": "rootfs.img.gz",
            "sha256": hashlib.sha256(image).hexdigest(),
            "size": len(image),
        },
    }
    document.update({k: v for k, v in changes.items() if k != "rootfs"})
    document["rootfs"].update(changes.get("rootfs", {}))
    return document


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **extra: Any) -> Any:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    for key, value in extra.items():
        setattr(info, key, value)
    return info, data


def tar_of(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def new_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An Ed25519 key pair as PEM files: (private, public)."""
    key = Ed25519PrivateKey.generate()
    private = directory / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = directory / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def signature_of(manifest: bytes, private: Path) -> bytes:
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    return key.sign(manifest)  # type: ignore[union-attr]


def bundle_of(
    rootfs: bytes,
    manifest: dict[str, Any] | None = None,
    signature: bytes | None = None,
    packed: bytes | None = None,
) -> bytes:
    raw = json.dumps(manifest or manifest_of(rootfs)).encode()
    members = [member("manifest.json", raw)]
    if signature is not None:
        members.append(member("manifest.sig", signature))
    members.append(member("rootfs.img.gz", gzip.compress(rootfs) if packed is None else packed))
    return tar_of(*members)


class SmallReads(io.RawIOBase):
    """A request body that fails the test if it is ever asked for more than
    a chunk at once (the whole bundle must never be read into memory)."""

    def __init__(self, data: bytes, limit: int = CHUNK) -> None:
        self._data = io.BytesIO(data)
        self.limit = limit
        self.largest = 0
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # werkzeug's test client measures the body this way
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = self._data.seek(offset, whence)
        return self.position

    def read(self, size: int = -1) -> bytes:
        assert 0 <= size <= self.limit, f"read({size}): more than a chunk asked at once"
        self.largest = max(self.largest, size)
        data = self._data.read(size)
        self.position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class Image:
    """An image's files in a temp dir: booted from `booted`, both slots'
    partitions as files of PARTITION_SIZE, a real grubenv."""

    paths: SlotPaths
    root: Path

    def env(self) -> dict[str, str]:
        out = subprocess.run(
            ["grub-editenv", str(self.paths.grubenv), "list"], capture_output=True, text=True
        )
        return dict(line.split("=", 1) for line in out.stdout.splitlines())

    def set_env(self, *assignments: str) -> None:
        subprocess.run(["grub-editenv", str(self.paths.grubenv), "set", *assignments], check=True)

    def unset_env(self, *names: str) -> None:
        subprocess.run(["grub-editenv", str(self.paths.grubenv), "unset", *names], check=True)

    def boot(self, slot: str) -> None:
        self.paths.cmdline.write_text(
            f"BOOT_IMAGE=/vmlinuz root=PARTLABEL=homegw-root-{slot} ro homegw.slot={slot} quiet\n"
        )

    def slot_bytes(self, slot: str, size: int) -> bytes:
        with self.paths.partition(slot).open("rb") as stream:
            return stream.read(size)


def make_image(
    root: Path, booted: str = "a", release: bool = True, partition_size: int = PARTITION_SIZE
) -> Image:
    parts = root / "by-partlabel"
    parts.mkdir(parents=True)
    for slot in "ab":
        (parts / f"homegw-root-{slot}").write_bytes(bytes(partition_size))
    (root / "esp").mkdir()
    (root / "data").mkdir()
    (root / "keys").mkdir()
    paths = SlotPaths(
        cmdline=root / "cmdline",
        partitions=parts,
        grubenv=root / "esp" / "grubenv",
        image_release=root / "image-release",
        keys=root / "keys",
        data=root / "data",
        default_config=root / "default.yaml",
    )
    subprocess.run(["grub-editenv", str(paths.grubenv), "create"], check=True)
    image = Image(paths, root)
    image.set_env("homegw_active=a", "homegw_tried=0")
    image.boot(booted)
    if release:
        paths.image_release.write_text(
            'VERSION=0.1.0\nBUILD="20261201T000000Z"\nCOMPATIBLE=homegw-x86_64\n'
        )
    return image


def stream_of(data: bytes) -> BinaryIO:
    return io.BufferedReader(SmallReads(data), buffer_size=CHUNK)
