"""AppIds: stable app numbers in SQLite, across reopen and kill -9, bounded."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from homegw.modules.dpi.appids import FILE_NAME, MAX_NUMBER, AppIds


def test_numbers_are_stable_across_reopen(tmp_path: Path) -> None:
    ids = AppIds(tmp_path)
    first = {name: ids.number(name) for name in ("youtube", "example.co.uk", "netflix")}
    assert sorted(first.values()) == [1, 2, 3]
    assert ids.number("youtube") == first["youtube"]
    ids.close()
    again = AppIds(tmp_path)
    assert {name: again.name(number) for name, number in first.items()} == {n: n for n in first}
    assert again.number("example.co.uk") == first["example.co.uk"]
    assert again.number("new.example") == 4
    assert (tmp_path / FILE_NAME).exists()
    mode = sqlite3.connect(tmp_path / FILE_NAME).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_unknown_numbers_and_bad_names(tmp_path: Path) -> None:
    ids = AppIds(tmp_path)
    assert ids.name(0) is None and ids.name(7) is None and ids.name(-1) is None
    assert ids.name(MAX_NUMBER + 1) is None
    for junk in ("", "a b", "x" * 254, "tab\there", "é.example", None, 3, ["a"]):
        assert ids.number(junk) == 0  # type: ignore[arg-type]
    assert len(ids) == 0


def test_numbers_survive_kill_9(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from homegw.modules.dpi.appids import AppIds\n"
        "ids = AppIds(sys.argv[1])\n"
        "print(ids.number('roblox'), ids.number('example.org'), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    roblox, example = map(int, done.stdout.split())
    ids = AppIds(tmp_path)
    assert (ids.name(roblox), ids.name(example)) == ("roblox", "example.org")


def test_limit_bounds_domains_and_then_gives_zero(tmp_path: Path) -> None:
    ids = AppIds(tmp_path, limit=3)
    numbers = [ids.number(f"site{i}.example") for i in range(5)]
    assert numbers == [1, 2, 3, 0, 0]
    assert ids.number("site1.example") == 2  # numbered before the limit: still its number
    ids.close()
    again = AppIds(tmp_path, limit=3)
    assert again.number("site4.example") == 0  # the bound holds across reopen
    assert len(again) == 3


def test_reserved_app_ids_are_numbered_first_and_outside_the_limit(tmp_path: Path) -> None:
    ids = AppIds(tmp_path, limit=2)
    ids.reserve(["youtube", "netflix", "youtube", ""])
    assert (ids.number("youtube"), ids.number("netflix")) == (1, 2)
    assert [ids.number(d) for d in ("a.example", "b.example", "c.example")] == [3, 4, 0]
    ids.reserve(["tiktok"])  # a new database's app: numbered although domains are at the limit
    assert ids.number("tiktok") == 5
    ids.reserve(["a.example"])  # already numbered: keeps its number, no longer counts
    assert ids.number("c.example") == 6


def test_two_handles_on_one_file_never_give_a_name_two_numbers(tmp_path: Path) -> None:
    one, two = AppIds(tmp_path), AppIds(tmp_path)
    assert one.number("shared.example") == 1
    assert two.number("other.example") == 2  # two re-reads the file: 1 is taken
    assert two.number("shared.example") == 1
    assert one.name(2) == "other.example"


def test_concurrent_threads_get_one_number_per_name(tmp_path: Path) -> None:
    ids = AppIds(tmp_path)
    names = [f"n{i}.example" for i in range(150)]
    results: list[dict[str, int]] = []
    start = threading.Barrier(6)

    def work(order: list[str]) -> None:
        start.wait()
        results.append({name: ids.number(name) for name in order})

    threads = [
        threading.Thread(target=work, args=(names[k:] + names[:k],)) for k in range(0, 150, 25)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result == results[0] for result in results)
    assert sorted(results[0].values()) == list(range(1, 151))


def test_numbers_stop_at_65535(tmp_path: Path) -> None:
    ids = AppIds(tmp_path, limit=MAX_NUMBER + 10)
    assert ids.limit == MAX_NUMBER
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute("INSERT INTO app_numbers VALUES (?, 'last.example', 0)", (MAX_NUMBER - 1,))
    db.commit()
    assert ids.number("one.more") == MAX_NUMBER
    assert ids.number("too.many") == 0
    ids.reserve(["an_app"])
    assert ids.number("an_app") == 0
