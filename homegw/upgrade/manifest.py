"""The manifest of an upgrade bundle and its signature.

``manifest.json`` says what the bundle holds (IMG_CONTRACT.md):

    {"format": 1, "compatible": "homegw-x86_64", "version": "0.1.1",
     "build": "20261202T060000Z",
     "rootfs": {"file": "rootfs.img.gz", "sha256": "<hex of the uncompressed image>",
                "size": <uncompressed bytes>}}

``manifest.sig`` (optional) is the raw 64-byte Ed25519 signature of the
exact manifest.json bytes. When any public key (PEM, ``*.pub``) is in the
keys directory, a signature that one of them verifies is required.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

FORMAT = 1
COMPATIBLE = "homegw-x86_64"
ROOTFS = "rootfs.img.gz"
SIGNATURE_SIZE = 64
MAX_MANIFEST = 64 * 1024
MAX_ROOTFS = 64 << 30  # no root file system of an appliance comes near
#: a version and a build go into the grubenv as values: no '=', space or newline
TOKEN = r"^[0-9A-Za-z][0-9A-Za-z.+~_:-]{0,63}$"


class UpgradeError(Exception):
    """Why an upgrade cannot be done; ``reason`` says it to a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BundleRejected(UpgradeError):
    """The bundle is not a good bundle for this appliance: nothing was
    marked for trial. -> 400"""


class UpgradeUnavailable(UpgradeError):
    """Not possible in this state (not an image, a trial pending, another
    upgrade being written, an unreadable key). -> 409"""


class RootfsEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: Literal["rootfs.img.gz"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0, le=MAX_ROOTFS)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    compatible: str = Field(pattern=TOKEN)
    version: str = Field(pattern=TOKEN)
    build: str = Field(pattern=TOKEN)
    rootfs: RootfsEntry

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(), indent=2).encode() + b"\n"


def parse_manifest(data: bytes) -> Manifest:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BundleRejected("manifest.json is not JSON text") from None
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BundleRejected(f"manifest.json: {where}: {first['msg']}") from None


def load_keys(directory: Path) -> list[Ed25519PublicKey]:
    """The public keys bundles must be signed with (none: no signature needed).
    A key file that is not an Ed25519 public key stops every upgrade (fail
    closed), so a typo never turns the check off."""
    keys = []
    for path in sorted(directory.glob("*.pub")) if directory.is_dir() else []:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise UpgradeUnavailable(f"{path}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise UpgradeUnavailable(f"{path}: not an Ed25519 key")
        keys.append(key)
    return keys


def check_signature(manifest: bytes, signature: bytes | None, keys: list[Ed25519PublicKey]) -> None:
    """BundleRejected unless no key is configured or one of them verifies
    `signature` over the exact manifest bytes."""
    if not keys:
        return
    if signature is None:
        raise BundleRejected("the bundle is not signed, and this appliance requires a signature")
    for key in keys:
        try:
            key.verify(signature, manifest)
            return
        except InvalidSignature:
            continue
    raise BundleRejected("the signature matches none of the appliance's upgrade keys")


def sign(manifest: bytes, private_key_pem: Path) -> bytes:
    key = serialization.load_pem_private_key(private_key_pem.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_key_pem}: not an Ed25519 private key")
    return key.sign(manifest)
