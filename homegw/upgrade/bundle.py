"""The upgrade bundle (``homegw-<version>.hgwup``): an uncompressed tar of
``manifest.json``, ``manifest.sig`` (optional) and ``rootfs.img.gz``, in
that order (homegw/upgrade/manifest.py says what the manifest holds).

Reading is one pass over a stream (``tarfile`` mode ``r|``): the manifest
first, checked (schema, compatible, signature, the size against the target)
before a byte is written, then the gzip'd rootfs inflated chunk by chunk
straight into the target while hashing. Memory stays bounded whatever the
input: every read is at most CHUNK bytes, inflating is capped per call (a
gzip bomb meets the manifest's size), and tar headers (pax records included)
may take at most HEADER_ALLOWANCE bytes before and after the rootfs data.
Anything else a hostile bundle tries is a ``BundleRejected(reason)``.

    python -m homegw.upgrade.bundle make --rootfs rootfs.img --version 0.1.1 \\
        --out homegw-0.1.1.hgwup [--key private.pem]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from homegw.upgrade.manifest import (
    COMPATIBLE,
    FORMAT,
    MAX_MANIFEST,
    ROOTFS,
    SIGNATURE_SIZE,
    BundleRejected,
    Manifest,
    RootfsEntry,
    check_signature,
    parse_manifest,
    sign,
)

MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
MEMBERS = (MANIFEST, SIGNATURE, ROOTFS)
CHUNK = 1 << 20  # bytes read, inflated or written at once
HEADER_ALLOWANCE = 1 << 20  # tar bytes around the rootfs data (headers, manifest, padding)
MAX_BUNDLE_BYTES = 4 << 30  # the API's body limit for an upload


class BoundedSource:
    """The bundle stream as tarfile reads it: reads of at most CHUNK bytes,
    and none past ``limit`` (a position in the stream) — a tar header that
    claims more is refused instead of being read into memory."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self.limit = limit
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > CHUNK:
            size = CHUNK
        room = self.limit - self.position
        if room <= 0:
            raise BundleRejected("the bundle has more tar header data than a bundle has")
        data = self._stream.read(min(size, room))
        self.position += len(data)
        return data


def read_bundle(
    stream: BinaryIO,
    sink: BinaryIO,
    keys: list[Ed25519PublicKey],
    capacity: int,
    compatible: str = COMPATIBLE,
    before_write: Callable[[Manifest], None] | None = None,
) -> Manifest:
    """Check the bundle on `stream` and write its root file system into
    `sink` (at most `capacity` bytes). `before_write(manifest)` runs once
    everything but the rootfs itself is checked, before the first byte is
    written. Returns the manifest; BundleRejected on any problem."""
    source = BoundedSource(stream, HEADER_ALLOWANCE)
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:  # type: ignore[call-overload]
            return _read(tar, source, sink, keys, capacity, compatible, before_write)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleRejected(f"not a complete bundle: {exc}") from None


def _read(
    tar: tarfile.TarFile,
    source: BoundedSource,
    sink: BinaryIO,
    keys: list[Ed25519PublicKey],
    capacity: int,
    compatible: str,
    before_write: Callable[[Manifest], None] | None,
) -> Manifest:
    member = _expect(tar.next(), MANIFEST, "is empty")
    if member.size > MAX_MANIFEST:
        raise BundleRejected(f"manifest.json is {member.size} bytes (at most {MAX_MANIFEST})")
    raw_manifest = _small(tar, member)
    manifest = parse_manifest(raw_manifest)
    member = tar.next()
    signature = None
    if member is not None and member.name == SIGNATURE:
        _expect(member, SIGNATURE, "")
        if member.size != SIGNATURE_SIZE:
            raise BundleRejected(f"manifest.sig is {member.size} bytes, not {SIGNATURE_SIZE}")
        signature = _small(tar, member)
        member = tar.next()
    check_signature(raw_manifest, signature, keys)
    _fits(manifest, capacity, compatible)
    member = _expect(member, ROOTFS, "ends before rootfs.img.gz (truncated?)")
    source.limit = member.offset_data + member.size + HEADER_ALLOWANCE
    if before_write is not None:
        before_write(manifest)
    data = tar.extractfile(member)
    assert data is not None  # a regular file
    copy_rootfs(data, sink, manifest.rootfs)
    extra = tar.next()
    if extra is not None:
        raise BundleRejected(f"unexpected member {extra.name!r} after rootfs.img.gz")
    return manifest


def _expect(member: tarfile.TarInfo | None, name: str, missing: str) -> tarfile.TarInfo:
    if member is None:
        raise BundleRejected(f"the bundle {missing}")
    if member.name != name:
        if "/" in member.name or ".." in member.name:
            raise BundleRejected(f"member name {member.name!r} is a path: refused")
        if member.name in MEMBERS:
            raise BundleRejected(f"wrong member order: {member.name!r} where {name} belongs")
        raise BundleRejected(f"unexpected member {member.name!r} (expected {name})")
    if not member.isreg():
        raise BundleRejected(f"{name} is not a regular file (a link, a directory, a device?)")
    return member


def _small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    data = tar.extractfile(member)
    assert data is not None
    content = data.read(member.size)
    if len(content) != member.size:
        raise BundleRejected(f"{member.name} is truncated")
    return content


def _fits(manifest: Manifest, capacity: int, compatible: str) -> None:
    if manifest.compatible != compatible:
        raise BundleRejected(
            f"the bundle is for {manifest.compatible!r}, this appliance is {compatible!r}"
        )
    if manifest.rootfs.size > capacity:
        raise BundleRejected(
            f"the root file system ({manifest.rootfs.size} bytes) is bigger than the "
            f"slot's partition ({capacity} bytes)"
        )


def _inflated(data: BinaryIO) -> Iterator[bytes]:
    """The gzip stream's content, at most CHUNK bytes at a time."""
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip only
    while chunk := data.read(CHUNK):
        if inflate.eof:
            raise BundleRejected("rootfs.img.gz has data after its gzip stream")
        try:
            yield inflate.decompress(chunk, CHUNK)
            while inflate.unconsumed_tail and not inflate.eof:
                yield inflate.decompress(inflate.unconsumed_tail, CHUNK)
        except zlib.error as exc:
            raise BundleRejected(f"rootfs.img.gz is not valid gzip: {exc}") from None
        if inflate.unused_data:
            raise BundleRejected("rootfs.img.gz has data after its gzip stream")
    if not inflate.eof:
        raise BundleRejected("rootfs.img.gz is truncated (its gzip stream does not end)")


def copy_rootfs(data: BinaryIO, sink: BinaryIO, entry: RootfsEntry) -> None:
    """Inflate into `sink` while hashing; the size and the hash must be the
    manifest's. Never more than the manifest's size is written."""
    digest = hashlib.sha256()
    written = 0
    for piece in _inflated(data):
        if written + len(piece) > entry.size:
            raise BundleRejected(f"the root file system is bigger than the manifest's {entry.size}")
        sink.write(piece)
        digest.update(piece)
        written += len(piece)
    if written != entry.size:
        raise BundleRejected(
            f"the root file system is {written} bytes, the manifest says {entry.size}"
        )
    if digest.hexdigest() != entry.sha256:
        raise BundleRejected("the root file system's sha256 is not the manifest's")


# -- writing (image/bundle.sh) -------------------------------------------------


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(mtime)
    return info


def make(
    rootfs: Path,
    version: str,
    out: Path,
    key: Path | None = None,
    compatible: str = COMPATIBLE,
    build: str | None = None,
) -> Manifest:
    """Write the bundle of `rootfs` to `out` (atomically: a temp file renamed)."""
    sha256, size = _sha256_and_size(rootfs)
    now = time.time()
    manifest = Manifest(
        format=FORMAT,
        compatible=compatible,
        version=version,
        build=build or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)),
        rootfs=RootfsEntry(file=ROOTFS, sha256=sha256, size=size),
    )
    raw = manifest.to_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out.parent) as packed:
        with (
            rootfs.open("rb") as source,
            gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as gz,
        ):
            shutil.copyfileobj(source, gz, CHUNK)
        packed_size = packed.tell()
        packed.seek(0)
        partial = out.with_name(f".{out.name}.tmp")
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
            tar.addfile(_member(MANIFEST, len(raw), now), io.BytesIO(raw))
            if key is not None:
                signature = sign(raw, key)
                tar.addfile(_member(SIGNATURE, len(signature), now), io.BytesIO(signature))
            tar.addfile(_member(ROOTFS, packed_size, now), packed)
    partial.replace(out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m homegw.upgrade.bundle")
    verbs = parser.add_subparsers(dest="verb", required=True)
    make_ = verbs.add_parser("make", help="write an upgrade bundle of a root file system image")
    make_.add_argument("--rootfs", required=True, type=Path, help="the ext4 image")
    make_.add_argument("--version", required=True)
    make_.add_argument("--out", required=True, type=Path)
    make_.add_argument("--key", type=Path, help="Ed25519 private key (PEM) to sign with")
    make_.add_argument("--compatible", default=COMPATIBLE)
    make_.add_argument("--build", help="build id (default: the UTC time now)")
    args = parser.parse_args(argv)
    try:
        manifest = make(args.rootfs, args.version, args.out, args.key, args.compatible, args.build)
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    signed = " (signed)" if args.key else ""
    print(f"{args.out}: homegw {manifest.version} build {manifest.build}{signed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
