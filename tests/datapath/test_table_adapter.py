"""The table adapter (homegw/dataplane/table.py) against real maps: each map
is made and pinned by bcc in the test, written through bcc and read through
the adapter (opened by its pinned path, types decoded from bcc's type
descriptions), and the reverse."""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Iterator

import pytest

from homegw.dataplane import libbpf
from homegw.dataplane.ctypesdesc import decode_json
from homegw.dataplane.pinned import possible_cpus
from homegw.dataplane.table import LPM_TRIE, PERCPU_ARRAY, PERCPU_HASH, Table, open_table

SOURCE = """
struct pair { u32 a; u16 b; u8 mac[6]; u32 pad; };
struct nested {
    struct pair inner;
    union { u32 word; u8 bytes[4]; };
    u64 flags : 3, rest : 61;
};
struct lpm_key { u32 prefixlen; u32 addr; };
BPF_TABLE_PINNED("hash", struct pair, struct nested, t_hash, 64, "{pin}/t_hash");
BPF_TABLE_PINNED("array", u32, u64, t_array, 4, "{pin}/t_array");
BPF_TABLE_PINNED("percpu_array", u32, struct pair, t_percpu, 2, "{pin}/t_percpu");
BPF_TABLE_PINNED("percpu_array", u32, u32, t_percpu32, 2, "{pin}/t_percpu32");
BPF_TABLE_PINNED("percpu_hash", u64, u64, t_percpu_hash, 8, "{pin}/t_percpu_hash");
BPF_TABLE_PINNED("hash", u64, u32, t_hash64, 5000, "{pin}/t_hash64");
BPF_TABLE_PINNED("lpm_trie", struct lpm_key, u32, t_lpm, 16, "{pin}/t_lpm", BPF_F_NO_PREALLOC);
int touch(struct xdp_md *ctx) {
    u32 k = 0;
    u64 *v = t_array.lookup(&k);
    struct pair p = {};
    struct lpm_key l = {};
    u64 h = 0;
    if (v) (*v)++;
    t_hash.lookup(&p); t_percpu.lookup(&k); t_percpu32.lookup(&k);
    t_percpu_hash.lookup(&h); t_lpm.lookup(&l); t_hash64.lookup(&h);
    return XDP_PASS;
}
"""


@pytest.fixture
def bcc_maps(pin_dir: str) -> Iterator[object]:
    from bcc import BPF

    os.makedirs(pin_dir)
    bpf = BPF(text=SOURCE.replace("{pin}", pin_dir))
    yield bpf
    bpf.cleanup()


def adapter(bpf, pin_dir: str, name: str) -> Table:  # bcc.BPF
    """The table as the appliance opens it: by path, types from the descriptions."""
    from bcc import lib

    key_desc = lib.bpf_table_key_desc(bpf.module, name.encode()).decode()
    leaf_desc = lib.bpf_table_leaf_desc(bpf.module, name.encode()).decode()
    fd = libbpf.obj_get(f"{pin_dir}/{name}")
    return open_table(
        name, fd, libbpf.map_info(fd).type, decode_json(key_desc), decode_json(leaf_desc)
    )


def layout(cls) -> list:  # a ctypes type
    """Field names, offsets and sizes, recursively: what must match bcc's."""
    if not hasattr(cls, "_fields_"):
        return [ctypes.sizeof(cls)]
    out = [ctypes.sizeof(cls)]
    for field in cls._fields_:
        descriptor = getattr(cls, field[0])
        out.append((field[0], descriptor.offset, descriptor.size, layout(field[1])))
    return out


def test_decoded_types_have_bccs_layout(bcc_maps, pin_dir: str) -> None:
    for name in ("t_hash", "t_array", "t_percpu", "t_lpm"):
        table = adapter(bcc_maps, pin_dir, name)
        theirs = bcc_maps[name]
        assert layout(table.Key) == layout(theirs.Key), name
        sleaf = getattr(theirs, "sLeaf", theirs.Leaf)
        assert layout(getattr(table, "sLeaf", table.Leaf)) == layout(sleaf), name
        table.close()


def test_hash_written_by_bcc_read_by_adapter_and_back(bcc_maps, pin_dir: str) -> None:
    theirs = bcc_maps["t_hash"]
    key = theirs.Key(a=7, b=9)
    key.mac[:] = [1, 2, 3, 4, 5, 6]
    value = theirs.Leaf()
    value.inner.a = 11
    value.word = 0x01020304
    value.flags, value.rest = 5, 12345
    theirs[key] = value

    ours = adapter(bcc_maps, pin_dir, "t_hash")
    (got_key, got), *others = ours.items()
    assert others == []
    assert (got_key.a, got_key.b, list(got_key.mac)) == (7, 9, [1, 2, 3, 4, 5, 6])
    assert (got.inner.a, got.word, list(got.bytes), got.flags, got.rest) == (
        11,
        0x01020304,
        [4, 3, 2, 1],
        5,
        12345,
    )
    assert len(ours) == 1 and ours.get(ours.Key(a=1)) is None

    mine = ours.Key(a=8, b=1)
    ours[mine] = ours.Leaf(word=99)
    assert theirs[theirs.Key(a=8, b=1)].word == 99
    del ours[got_key]
    with pytest.raises(KeyError):
        del ours[got_key]
    assert [k.a for k in theirs] == [8]
    ours.clear()
    assert len(theirs) == 0
    ours.close()


def test_a_big_hash_is_read_in_batches_whole_and_exact(bcc_maps, pin_dir: str) -> None:
    ours = adapter(bcc_maps, pin_dir, "t_hash64")
    assert ours.items() == []
    theirs = bcc_maps["t_hash64"]
    for i in range(4500):  # more than one batch (BATCH = 4096)
        theirs[theirs.Key(i * 7919)] = theirs.Leaf(i)
    read = {key.value: value.value for key, value in ours.items()}
    assert read == {i * 7919: i for i in range(4500)}
    ours.close()


def test_array_delete_zeroes_and_ints_are_keys(bcc_maps, pin_dir: str) -> None:
    theirs = bcc_maps["t_array"]
    theirs[ctypes.c_int(2)] = ctypes.c_uint64(42)
    ours = adapter(bcc_maps, pin_dir, "t_array")
    assert ours[2].value == 42
    assert [v.value for v in ours.values()] == [0, 0, 42, 0]
    assert len(ours) == 4
    ours[ctypes.c_int(3)] = ctypes.c_uint64(7)
    assert theirs[ctypes.c_int(3)].value == 7
    del ours[3]
    assert theirs[ctypes.c_int(3)].value == 0
    with pytest.raises(ValueError, match="value of 4 bytes"):
        ours[0] = ctypes.c_uint32(1)
    ours.close()


def test_per_cpu_values_one_per_cpu_both_ways(bcc_maps, pin_dir: str) -> None:
    cpus = possible_cpus()
    theirs = bcc_maps["t_percpu"]
    values = theirs.Leaf()
    for cpu in range(cpus):
        values[cpu].a = 100 + cpu
    theirs[ctypes.c_int(1)] = values
    ours = adapter(bcc_maps, pin_dir, "t_percpu")
    assert ours.map_type == PERCPU_ARRAY
    assert [v.a for v in ours.getvalue(ctypes.c_int(1))] == [100 + c for c in range(cpus)]
    mine = ours.Leaf()
    for cpu in range(cpus):
        mine[cpu].b = cpu + 1
    ours[ctypes.c_int(0)] = mine
    assert [v.b for v in theirs.getvalue(ctypes.c_int(0))] == list(range(1, cpus + 1))
    ours.close()

    # u32 values sit in 8-byte slots: bcc and the adapter agree on them
    narrow_theirs = bcc_maps["t_percpu32"]
    narrow = adapter(bcc_maps, pin_dir, "t_percpu32")
    narrow[ctypes.c_int(1)] = narrow.Leaf(*range(5, 5 + cpus))
    assert list(narrow_theirs.getvalue(ctypes.c_int(1))) == list(range(5, 5 + cpus))
    assert sum(narrow.getvalue(ctypes.c_int(1))) == sum(range(5, 5 + cpus))
    narrow.close()

    hashed_theirs = bcc_maps["t_percpu_hash"]
    hashed_theirs[ctypes.c_uint64(77)] = hashed_theirs.Leaf(*[3] * cpus)
    hashed = adapter(bcc_maps, pin_dir, "t_percpu_hash")
    assert hashed.map_type == PERCPU_HASH
    [(key, per_cpu)] = hashed.items()
    assert (key.value, sum(per_cpu)) == (77, 3 * cpus)
    hashed.close()


def test_lpm_trie_both_ways(bcc_maps, pin_dir: str) -> None:
    theirs = bcc_maps["t_lpm"]
    theirs[theirs.Key(24, 0x0001A8C0)] = ctypes.c_uint32(1)
    ours = adapter(bcc_maps, pin_dir, "t_lpm")
    assert ours.map_type == LPM_TRIE
    assert [(k.prefixlen, k.addr, v.value) for k, v in ours.items()] == [(24, 0x0001A8C0, 1)]
    # a longest-prefix lookup through the adapter
    assert ours[ours.Key(32, 0x0B01A8C0)].value == 1
    ours[ours.Key(16, 0x0000A8C0)] = ctypes.c_uint32(2)
    assert theirs[theirs.Key(32, 0x0B02A8C0)].value == 2
    ours.close()


def test_descriptions_of_every_kind_decode() -> None:
    packed = json.dumps(["p", [["a", "unsigned char"], ["b", "unsigned int"]], "struct_packed"])
    assert ctypes.sizeof(decode_json(packed)) == 5
    grid = json.dumps(["g", [["cells", "unsigned short", [2, 3]]]])
    assert ctypes.sizeof(decode_json(grid)) == 12
    assert decode_json('"unsigned long long"') is ctypes.c_ulonglong
