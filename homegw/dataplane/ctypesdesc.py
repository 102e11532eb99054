"""ctypes types from bcc's JSON type descriptions of a map's key and value.

The build child records, for every map, the description bcc's compiler made
of its key and leaf type (bcc.lib.bpf_table_key_desc / leaf_desc). A
description is either a C scalar type name, or a list:

    [name, [field, ...], kind]   kind "struct" (default), "struct_packed", "union"

where a field is [name, type] (type a description), [name, type, [count, ...]]
(an array), [name, type, bits] (a bitfield) or itself a struct or union
description (its name "" when anonymous). The appliance decodes them here,
with no bcc in the process, into the same ctypes layout bcc would use.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

SCALARS: dict[str, Any] = {
    "_Bool": ctypes.c_bool,
    "char": ctypes.c_char,
    "signed char": ctypes.c_byte,
    "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short,
    "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long,
    "unsigned long": ctypes.c_ulong,
    "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
    "__int128": ctypes.c_int64 * 2,
    "unsigned __int128": ctypes.c_uint64 * 2,
}
AGGREGATE_KINDS = ("struct", "struct_packed", "union")


class TypeDescError(ValueError):
    """A type description this decoder does not understand."""


def decode_json(text: str) -> Any:
    """The ctypes type of a description in bcc's JSON text."""
    return decode(json.loads(text))


def decode(desc: Any) -> Any:
    if isinstance(desc, str):
        try:
            return SCALARS[desc]
        except KeyError:
            raise TypeDescError(f"unknown scalar type {desc!r}") from None
    if not isinstance(desc, list) or len(desc) < 2 or not isinstance(desc[1], list):
        raise TypeDescError(f"not a type description: {desc!r}")
    return _aggregate(desc)


def _aggregate(desc: list) -> Any:
    name, members = desc[0], desc[1]
    kind = desc[2] if len(desc) > 2 else "struct"
    if kind not in AGGREGATE_KINDS:
        raise TypeDescError(f"{name}: unknown kind {kind!r}")
    fields: list[tuple] = []
    anonymous: list[str] = []
    for member in members:
        fields.append(_field(member, anonymous))
    namespace: dict[str, Any] = {"_fields_": fields, "_anonymous_": anonymous}
    if kind == "struct_packed":
        namespace["_pack_"] = 1
    base = ctypes.Union if kind == "union" else ctypes.Structure
    return type(str(name) or "anonymous", (base,), namespace)


def _field(member: Any, anonymous: list[str]) -> tuple:
    if not isinstance(member, list) or len(member) not in (2, 3):
        raise TypeDescError(f"not a field description: {member!r}")
    name = member[0]
    if len(member) == 2:
        return (name, decode(member[1]))
    extra = member[2]
    if isinstance(extra, list) and extra and all(isinstance(n, int) for n in extra):
        element = decode(member[1])
        for count in reversed(extra):  # int a[2][3]: 2 arrays of 3
            element = element * count
        return (name, element)
    if isinstance(extra, int) and not isinstance(extra, bool):
        return (name, decode(member[1]), extra)
    if extra in AGGREGATE_KINDS:
        if not name:
            name = f"__anon{len(anonymous)}"
            anonymous.append(name)
        return (name, _aggregate(member))
    raise TypeDescError(f"field {name!r}: cannot decode {extra!r}")
