"""Fragments held before their first: bounds in frames, bytes and time."""

from __future__ import annotations

from homegw.modules.nat.frags import NS, FragmentHolder

TRAIN_A = (1, 2, 7, 17, 0)
TRAIN_B = (1, 2, 8, 17, 1)


def test_held_until_released_oldest_first() -> None:
    holder = FragmentHolder()
    assert holder.hold(TRAIN_A, b"a1", 3, 0)
    assert holder.hold(TRAIN_B, b"b1", 4, 0)
    assert holder.hold(TRAIN_A, b"a2", 3, 1)
    assert [h.frame for h in holder.release(TRAIN_A)] == [b"a1", b"a2"]
    assert (holder.frames, holder.bytes, holder.waiting()) == (1, 2, [TRAIN_B])
    assert holder.release(TRAIN_A) == []
    assert holder.stats.released == 2


def test_bounded_in_frames_and_bytes() -> None:
    holder = FragmentHolder(max_frames=3, max_bytes=100)
    assert [holder.hold(TRAIN_A, b"x" * 40, 1, 0) for _ in range(3)] == [True, True, False]
    assert holder.stats.over_limit == 1  # 120 bytes would be over 100
    holder.release(TRAIN_A)
    assert [holder.hold(TRAIN_B, b"y", 1, 0) for _ in range(4)] == [True, True, True, False]
    assert (holder.frames, holder.stats.over_limit) == (3, 2)


def test_expired_after_max_age_and_emptied_trains_reported() -> None:
    holder = FragmentHolder(max_age_ns=2 * NS)
    holder.hold(TRAIN_A, b"old", 1, 0)
    holder.hold(TRAIN_B, b"old", 1, 0)
    holder.hold(TRAIN_B, b"new", 1, 2 * NS)
    assert holder.expire(2 * NS - 1) == []
    assert holder.expire(2 * NS) == [TRAIN_A]
    assert (holder.frames, holder.bytes, holder.stats.expired) == (1, 3, 2)
    assert [h.frame for h in holder.release(TRAIN_B)] == [b"new"]
