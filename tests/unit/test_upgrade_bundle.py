"""The .hgwup bundle: make + read round trip into a file standing in for a
partition, the make CLI, and every hostile bundle the reader must refuse
with a clear reason before a byte too many is written (wrong member order,
extra members, paths, links, sizes, truncation, a gzip bomb, a huge tar
header, a hash mismatch), the signature rules, reads never over a chunk."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from homegw.upgrade import bundle
from homegw.upgrade.bundle import CHUNK, HEADER_ALLOWANCE, make, read_bundle
from homegw.upgrade.manifest import BundleRejected, Manifest, UpgradeUnavailable, load_keys
from tests.unit.upgrade_fakes import (
    SmallReads,
    bundle_of,
    manifest_of,
    member,
    new_key,
    rootfs_bytes,
    signature_of,
    tar_of,
)

ROOT = Path(__file__).resolve().parents[2]
ROOTFS = rootfs_bytes()


def read(data: bytes, capacity: int = 1 << 20, keys: list | None = None) -> tuple[Manifest, bytes]:
    sink = io.BytesIO()
    manifest = read_bundle(SmallReads(data), sink, keys or [], capacity)
    return manifest, sink.getvalue()


def refused(data: bytes, capacity: int = 1 << 20, keys: list | None = None) -> tuple[str, bytes]:
    """The reason the bundle was refused, and what had been written by then."""
    sink = io.BytesIO()
    with pytest.raises(BundleRejected) as caught:
        read_bundle(SmallReads(data), sink, keys or [], capacity)
    return caught.value.reason, sink.getvalue()


def test_make_then_read_writes_the_image_into_the_partition(tmp_path: Path) -> None:
    image = tmp_path / "rootfs.img"
    image.write_bytes(ROOTFS)
    out = tmp_path / "out" / "homegw-0.1.1.hgwup"
    made = make(image, "0.1.1", out, build="20261202T0600Z")
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["manifest.json", "rootfs.img.gz"]
    partition = tmp_path / "part"
    partition.write_bytes(b"\xff" * (1 << 20))
    with out.open("rb") as stream, partition.open("r+b") as sink:
        manifest = read_bundle(stream, sink, [], 1 << 20)
    assert manifest == made and manifest.version == "0.1.1"
    assert manifest.rootfs.size == len(ROOTFS) and manifest.build == "20261202T0600Z"
    content = partition.read_bytes()
    assert content[: len(ROOTFS)] == ROOTFS
    assert content[len(ROOTFS) :] == b"\xff" * ((1 << 20) - len(ROOTFS))  # the rest untouched


def test_make_cli_signs_and_the_right_key_verifies(tmp_path: Path) -> None:
    image = tmp_path / "rootfs.img"
    image.write_bytes(ROOTFS)
    private, public = new_key(tmp_path, "release")
    out = tmp_path / "x.hgwup"
    argv = [sys.executable, "-m", "homegw.upgrade.bundle", "make", "--rootfs", str(image)]
    argv += ["--version", "0.2.0", "--out", str(out), "--key", str(private)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "0.2.0" in done.stdout and "(signed)" in done.stdout
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["manifest.json", "manifest.sig", "rootfs.img.gz"]
    manifest, written = read(out.read_bytes(), keys=load_keys(tmp_path))
    assert manifest.version == "0.2.0" and written == ROOTFS


def test_make_cli_refuses_a_bad_version(tmp_path: Path) -> None:
    image = tmp_path / "rootfs.img"
    image.write_bytes(ROOTFS)
    assert bundle.main(["make", "--rootfs", str(image), "--version", "1 2", "--out",
                        str(tmp_path / "x")]) == 1  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_reads_are_never_bigger_than_a_chunk() -> None:
    big = rootfs_bytes(3 * CHUNK + 5)
    stream = SmallReads(bundle_of(big))
    sink = io.BytesIO()
    read_bundle(stream, sink, [], 4 * CHUNK)
    assert sink.getvalue() == big and 0 < stream.largest <= CHUNK


def test_signature_required_once_a_key_is_configured(tmp_path: Path) -> None:
    private, _public = new_key(tmp_path, "mine")
    keys = load_keys(tmp_path)
    raw = json.dumps(manifest_of(ROOTFS)).encode()
    reason, written = refused(bundle_of(ROOTFS), keys=keys)
    assert "not signed" in reason and written == b""
    signed = bundle_of(ROOTFS, json.loads(raw), signature_of(raw, private))
    assert read(signed, keys=keys)[1] == ROOTFS


def test_wrong_key_or_tampered_manifest_refused(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    _good, _ = new_key(tmp_path / "good", "good")
    bad, _ = new_key(tmp_path / "bad", "bad")
    keys = load_keys(tmp_path / "good")
    document = manifest_of(ROOTFS)
    raw = json.dumps(document).encode()
    reason, written = refused(bundle_of(ROOTFS, document, signature_of(raw, bad)), keys=keys)
    assert "matches none" in reason and written == b""
    # a signature over other bytes (one more space) does not carry over
    tampered = bundle_of(ROOTFS, document, signature_of(raw + b" ", _good))
    assert "matches none" in refused(tampered, keys=keys)[0]
    # no key configured: an unsigned and a signed bundle are both fine
    assert read(bundle_of(ROOTFS, document, signature_of(raw, bad)))[1] == ROOTFS


def test_a_key_file_that_is_not_an_ed25519_key_stops_upgrades(tmp_path: Path) -> None:
    (tmp_path / "typo.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n")
    with pytest.raises(UpgradeUnavailable, match="typo.pub"):
        load_keys(tmp_path)
    assert load_keys(tmp_path / "absent") == []


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        (lambda m, r: [r, m], "wrong member order"),
        (lambda m, r: [member("manifest.sig", bytes(64)), m, r], "wrong member order"),
        (lambda m, r: [m, r, member("manifest.sig", bytes(64))], "unexpected member"),
        (lambda m, r: [m, member("notes.txt", b"hi"), r], "unexpected member 'notes.txt'"),
        (lambda m, r: [m, r, member("extra", b"x")], "unexpected member 'extra' after"),
        (lambda m, r: [member("./manifest.json", m[1]), r], "is a path"),
        (lambda m, r: [m, member("../rootfs.img.gz", r[1])], "is a path"),
        (lambda m, r: [m, member("x/rootfs.img.gz", r[1])], "is a path"),
        (lambda m, r: [member("manifest.json", kind=tarfile.SYMTYPE, linkname="/etc/x"), r],
         "not a regular file"),
        (lambda m, r: [m, member("rootfs.img.gz", kind=tarfile.LNKTYPE, linkname="manifest.json")],
         "not a regular file"),
        (lambda m, r: [m, member("rootfs.img.gz", kind=tarfile.DIRTYPE)], "not a regular file"),
        (lambda m, r: [m], "ends before rootfs.img.gz"),
        (lambda m, r: [], "is empty"),
    ],
)  # fmt: skip
def test_member_layout_refused(members, expected: str) -> None:  # type: ignore[no-untyped-def]
    manifest = member("manifest.json", json.dumps(manifest_of(ROOTFS)).encode())
    rootfs = member("rootfs.img.gz", gzip.compress(ROOTFS))
    reason, _written = refused(tar_of(*members(manifest, rootfs)))
    assert expected in reason, reason


def test_nothing_is_written_before_the_members_are_known_good() -> None:
    """Refusals of the manifest's side come before the first byte."""
    manifest = member("manifest.json", json.dumps(manifest_of(ROOTFS)).encode())
    rootfs = member("rootfs.img.gz", gzip.compress(ROOTFS))
    for data in (tar_of(rootfs, manifest), tar_of(manifest, member("x/y", b""), rootfs)):
        assert refused(data)[1] == b""


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"format": 2}, "format"),
        ({"compatible": "homegw-arm64"}, "is for 'homegw-arm64'"),
        ({"version": "1.0\nBAD=1"}, "version"),
        ({"rootfs": {"size": 0}}, "rootfs.size"),
        ({"rootfs": {"sha256": "00"}}, "rootfs.sha256"),
        ({"rootfs": {"file": "../x"}}, "rootfs.file"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_manifest_refused(changes: dict, expected: str) -> None:
    reason, written = refused(bundle_of(ROOTFS, manifest_of(ROOTFS, **changes)))
    assert expected in reason and written == b"", reason


def test_manifest_that_is_not_json_or_too_big_refused() -> None:
    rootfs = member("rootfs.img.gz", gzip.compress(ROOTFS))
    assert "not JSON" in refused(tar_of(member("manifest.json", b"\xff{"), rootfs))[0]
    huge = member("manifest.json", b" " * (64 * 1024 + 1))
    assert "at most" in refused(tar_of(huge, rootfs))[0]
    short_sig = member("manifest.sig", bytes(10))
    manifest = member("manifest.json", json.dumps(manifest_of(ROOTFS)).encode())
    assert "not 64" in refused(tar_of(manifest, short_sig, rootfs))[0]


def test_rootfs_bigger_than_the_partition_refused_before_writing() -> None:
    reason, written = refused(bundle_of(ROOTFS), capacity=len(ROOTFS) - 1)
    assert "bigger than the slot's partition" in reason and written == b""


def test_rootfs_bigger_than_the_manifest_says_stops_at_its_size() -> None:
    """A gzip bomb: the manifest says 1 MiB, the stream inflates to 64 MiB
    of zeros; writing stops at the manifest's size."""
    small = bytes(1 << 20)
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)
    reason, written = refused(bundle_of(small, manifest_of(small), packed=bomb), capacity=1 << 30)
    assert "bigger than the manifest" in reason
    assert len(written) <= 1 << 20


def test_rootfs_smaller_than_the_manifest_or_another_hash_refused() -> None:
    longer = manifest_of(ROOTFS, rootfs={"size": len(ROOTFS) + 1})
    assert "the manifest says" in refused(bundle_of(ROOTFS, longer))[0]
    other = manifest_of(rootfs_bytes(seed=2))
    reason, written = refused(bundle_of(ROOTFS, other))
    assert "sha256" in reason and written == ROOTFS  # written, but never marked for trial


def test_truncated_gzip_tar_and_trailing_data_refused() -> None:
    packed = gzip.compress(ROOTFS)
    cut = bundle_of(ROOTFS, packed=packed[: len(packed) // 2])
    assert "truncated" in refused(cut)[0]
    assert "after its gzip stream" in refused(bundle_of(ROOTFS, packed=packed + b"junk"))[0]
    assert "not valid gzip" in refused(bundle_of(ROOTFS, packed=b"\x1f\x8b" + bytes(100)))[0]
    whole = bundle_of(ROOTFS)
    data_end = 2 * 512 + 512 * -(-len(json.dumps(manifest_of(ROOTFS))) // 512) + len(packed)
    for length in (100, 700, 1500, data_end // 2, data_end - 1):
        reason = refused(whole[:length])[0]
        assert "not a complete bundle" in reason or "truncated" in reason, (length, reason)
    assert read(whole[: data_end + 512])[1] == ROOTFS  # the end-of-archive blocks may go


def test_a_huge_tar_header_is_refused_not_read_into_memory() -> None:
    """A pax header that claims 32 MiB of records: the reader stops at its
    header allowance instead of reading it all."""
    rootfs = gzip.compress(ROOTFS)
    info = tarfile.TarInfo("manifest.json")
    raw = json.dumps(manifest_of(ROOTFS)).encode()
    info.size = len(raw)
    info.pax_headers = {"comment": "x" * (32 << 20)}
    data = tar_of((info, raw), member("rootfs.img.gz", rootfs), fmt=tarfile.PAX_FORMAT)
    stream = SmallReads(data)
    with pytest.raises(BundleRejected, match="more tar header data"):
        read_bundle(stream, io.BytesIO(), [], 1 << 20)
    assert stream.position <= HEADER_ALLOWANCE + CHUNK
