"""homegw.auth: password and token hashing, setup token, local token, revoke,
sessions and the failed-login limiter (a fake clock)."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from homegw.auth import (
    AUTH_FILE,
    LOCAL_TOKEN_FILE,
    SETUP_TOKEN_FILE,
    AuthError,
    AuthStore,
    LoginLimiter,
    SessionTable,
    read_local_token,
)

PASSWORD = "correct horse battery"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> AuthStore:
    return AuthStore(tmp_path)


def make_admin(store: AuthStore) -> None:
    token = store.ensure_setup_token()
    assert token
    store.setup(token, PASSWORD)


def test_no_admin_at_first_start_and_a_private_setup_token(store: AuthStore) -> None:
    assert not store.has_admin
    token = store.ensure_setup_token()
    path = store.state_dir / SETUP_TOKEN_FILE
    assert token and path.read_text().strip() == token
    assert mode(path) == 0o600
    assert store.ensure_setup_token() == token  # the same one until used
    assert not store.check_login("admin", "")


def test_setup_needs_the_token_and_happens_once(store: AuthStore) -> None:
    token = store.ensure_setup_token()
    assert token
    with pytest.raises(AuthError, match="setup token"):
        store.setup(token + "x", PASSWORD)
    assert not store.has_admin
    store.setup(token, PASSWORD)
    assert store.has_admin and not (store.state_dir / SETUP_TOKEN_FILE).exists()
    with pytest.raises(AuthError, match="exists"):
        store.setup(token, "another password")
    assert store.ensure_setup_token() is None


def test_password_is_stored_as_an_argon2_hash(store: AuthStore) -> None:
    make_admin(store)
    text = (store.state_dir / AUTH_FILE).read_text()
    assert PASSWORD not in text
    assert json.loads(text)["admin_hash"].startswith("$argon2id$")
    assert mode(store.state_dir / AUTH_FILE) == 0o600
    assert store.check_login("admin", PASSWORD)
    assert not store.check_login("admin", PASSWORD + "!")
    assert not store.check_login("root", PASSWORD)
    # a new process reads the same admin
    assert AuthStore(store.state_dir).check_login("admin", PASSWORD)


def test_short_passwords_are_refused(store: AuthStore) -> None:
    with pytest.raises(AuthError, match="characters"):
        store.set_password("short")
    assert not store.has_admin


def test_tokens_are_stored_hashed_shown_once_and_revocable(store: AuthStore) -> None:
    info, secret = store.create_token("backup script", now=100.0)
    assert info.name == "backup script" and info.created_at == 100.0
    text = (store.state_dir / AUTH_FILE).read_text()
    raw = secret.split("_", 2)[2]
    assert raw not in text and secret not in text
    assert hashlib.sha256(raw.encode()).hexdigest() in text
    assert store.verify_token(secret) == info
    assert AuthStore(store.state_dir).verify_token(secret) == info
    assert store.verify_token(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify_token(f"hgw_{info.id}_") is None
    assert store.verify_token("garbage") is None
    assert [t.id for t in store.tokens()] == [info.id]
    assert store.revoke(info.id)
    assert store.verify_token(secret) is None
    assert AuthStore(store.state_dir).verify_token(secret) is None
    assert not store.revoke(info.id)


def test_local_token_is_private_and_replaced_at_each_start(store: AuthStore) -> None:
    store.write_local_token()
    first = read_local_token(store.state_dir)
    assert mode(store.state_dir / LOCAL_TOKEN_FILE) == 0o600
    assert store.verify_token(first) is not None
    restarted = AuthStore(store.state_dir)
    restarted.write_local_token()
    second = read_local_token(store.state_dir)
    assert second != first
    assert restarted.verify_token(second) is not None
    assert restarted.verify_token(first) is None
    assert [t.name for t in restarted.tokens()] == ["local"]


def test_sessions_end_at_logout_idle_and_max_age() -> None:
    table = SessionTable(idle_s=60, max_age_s=300)
    sid = table.open(now=0)
    assert table.touch(sid, now=50)
    assert table.touch(sid, now=100)  # idle time restarted at 50
    assert not table.touch(sid, now=161)
    kept = table.open(now=200)
    for t in range(250, 500, 50):
        assert table.touch(kept, now=t) == (t - 200 <= 300)
    other = table.open(now=0)
    table.close(other)
    assert not table.touch(other, now=1)
    assert not table.touch("made-up", now=1)


def test_limiter_refuses_after_five_failures_until_the_window_passes() -> None:
    limiter = LoginLimiter(per_client=5, overall=100, window_s=60)
    for t in range(5):
        assert limiter.retry_after("10.0.0.2", now=t) == 0
        limiter.failed("10.0.0.2", now=t)
    assert limiter.retry_after("10.0.0.2", now=10) == pytest.approx(50)
    assert limiter.retry_after("10.0.0.3", now=10) == 0  # another client is not held
    assert limiter.retry_after("10.0.0.2", now=60.5) == 0  # the first failure left the window


def test_limiter_bounds_every_client_together() -> None:
    limiter = LoginLimiter(per_client=5, overall=10, window_s=60)
    for i in range(10):
        limiter.failed(f"10.0.0.{i}", now=1)
    assert limiter.retry_after("10.0.0.99", now=2) == pytest.approx(59)
    assert limiter.retry_after("10.0.0.99", now=61.5) == 0


def test_limiter_forgets_a_client_after_success_and_bounds_memory() -> None:
    limiter = LoginLimiter(per_client=2, overall=1000, window_s=60, max_clients=3)
    limiter.failed("a", now=0)
    limiter.succeeded("a")
    limiter.failed("a", now=1)
    assert limiter.retry_after("a", now=2) == 0
    for client in "bcdef":
        limiter.failed(client, now=3)
    assert len(limiter._failures) <= 3


def test_sessions_are_bounded_the_oldest_goes() -> None:
    table = SessionTable(max_sessions=3)
    first, *rest = [table.open(now=t) for t in range(4)]
    assert not table.touch(first, now=5)
    assert all(table.touch(sid, now=5) for sid in rest)
