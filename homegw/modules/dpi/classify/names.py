"""Server names as the classifiers accept them: LDH host names, lower case."""

from __future__ import annotations

MAX_NAME = 253  # presentation form, no trailing dot
MAX_LABEL = 63
_LDH = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-")


def hostname(raw: bytes) -> str | None:
    """raw as a lower-case host name, or None when it is not one.

    Letters, digits and hyphens (RFC 952/1123: no leading or trailing hyphen
    in a label), labels of 1..63 bytes, at most 253 bytes, no trailing dot
    (RFC 6066 forbids one in SNI), and a last label that is not all digits
    (an IPv4 literal is no name).
    """
    if not raw or len(raw) > MAX_NAME:
        return None
    name = raw.lower()
    labels = name.split(b".")
    for label in labels:
        if not 0 < len(label) <= MAX_LABEL or not _LDH.issuperset(label):
            return None
        if label[0] == 0x2D or label[-1] == 0x2D:  # "-"
            return None
    if labels[-1].isdigit():
        return None
    return name.decode("ascii")
