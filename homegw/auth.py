"""Who may use the management API: the admin's password, bearer tokens, the
one-time setup token, web sessions and the failed-login limiter.

Files under ``state_dir`` (all 0600, written atomically):

- ``auth.json``     the admin's argon2 password hash and the bearer tokens'
                    SHA-256 hashes (never a token itself);
- ``setup-token``   while there is no admin: the one-time token that
                    ``POST /api/v1/setup`` needs to create one (deleted then);
- ``api-token``     the local token for the CLI, replaced at every start.

There is no default password. Tokens are 256-bit random secrets, so a fast
hash is enough to store them (nothing to brute-force); passwords are chosen
by people and get argon2id. Timed logic takes ``now`` (tests drive a clock).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from homegw.atomicfile import write_atomic

log = logging.getLogger(__name__)

AUTH_FILE = "auth.json"
SETUP_TOKEN_FILE = "setup-token"
LOCAL_TOKEN_FILE = "api-token"
LOCAL_TOKEN_NAME = "local"
ADMIN = "admin"
PASSWORD_MIN, PASSWORD_MAX = 10, 256
TOKEN_PREFIX = "hgw"

# OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): ~30 ms on these cores,
# and the memory is handed back after each hash.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class AuthError(Exception):
    """A request the auth store refuses (bad setup token, weak password, ...)."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def check_password_rules(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise AuthError(f"the password must have {PASSWORD_MIN} to {PASSWORD_MAX} characters")


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """A bearer token as listed: never its secret."""

    id: str
    name: str
    created_at: float


@dataclass
class _Token:
    id: str
    name: str
    created_at: float
    digest: str

    def info(self) -> TokenInfo:
        return TokenInfo(self.id, self.name, self.created_at)


def _split_token(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class AuthStore:
    """The admin and the tokens, kept in memory and in ``auth.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._path = self.state_dir / AUTH_FILE
        self._lock = threading.Lock()
        self._admin_hash: str | None = None
        self._tokens: dict[str, _Token] = {}
        self._load()

    # -- persistence ---------------------------------------------------------
    def _load(self) -> None:
        if not self._path.exists():
            return
        data = json.loads(self._path.read_text())
        self._admin_hash = data.get("admin_hash")
        self._tokens = {t["id"]: _Token(**t) for t in data.get("tokens", [])}

    def _save(self) -> None:
        data: dict[str, Any] = {
            "admin_hash": self._admin_hash,
            "tokens": [asdict(t) for t in self._tokens.values()],
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path, json.dumps(data, indent=1).encode(), mode=0o600)

    # -- the admin -----------------------------------------------------------
    @property
    def has_admin(self) -> bool:
        return self._admin_hash is not None

    def ensure_setup_token(self) -> str | None:
        """At a start without an admin: the setup token (written 0600 and
        logged); None once there is an admin."""
        path = self.state_dir / SETUP_TOKEN_FILE
        if self.has_admin:
            path.unlink(missing_ok=True)
            return None
        if path.exists():
            token = path.read_text().strip()
        else:
            token = secrets.token_urlsafe(24)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, token.encode() + b"\n", mode=0o600)
        log.warning(
            "no admin yet: create one with POST /api/v1/setup {token, password} "
            "(setup token %s, also in %s) or `homegw passwd` on the console",
            token,
            path,
        )
        return token

    def setup(self, token: str, password: str) -> None:
        """Create the admin with the one-time setup token."""
        path = self.state_dir / SETUP_TOKEN_FILE
        with self._lock:
            if self.has_admin:
                raise AuthError("the admin exists already")
            expected = path.read_text().strip() if path.exists() else ""
            if not expected or not hmac.compare_digest(expected.encode(), token.encode()):
                raise AuthError("wrong setup token")
            check_password_rules(password)
            self._admin_hash = hash_password(password)
            self._save()
            path.unlink(missing_ok=True)
        log.info("admin created with the setup token")

    def set_password(self, password: str) -> None:
        check_password_rules(password)
        digest = hash_password(password)
        with self._lock:
            self._admin_hash = digest
            self._save()
        (self.state_dir / SETUP_TOKEN_FILE).unlink(missing_ok=True)
        log.info("admin password changed")

    def check_login(self, username: str, password: str) -> bool:
        stored = self._admin_hash
        if stored is None or username != ADMIN:
            return False
        if not verify_password(stored, password):
            return False
        if _hasher.check_needs_rehash(stored):
            with self._lock:
                self._admin_hash = hash_password(password)
                self._save()
        return True

    # -- bearer tokens -------------------------------------------------------
    def create_token(self, name: str, now: float | None = None) -> tuple[TokenInfo, str]:
        """A new token: its listing and its secret, shown this once."""
        token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        created = time.time() if now is None else now
        entry = _Token(token_id, name, created, token_digest(secret))
        with self._lock:
            self._tokens[token_id] = entry
            self._save()
        log.info("token %s (%s) created", token_id, name)
        return entry.info(), f"{TOKEN_PREFIX}_{token_id}_{secret}"

    def tokens(self) -> list[TokenInfo]:
        with self._lock:
            return [t.info() for t in self._tokens.values()]

    def revoke(self, token_id: str) -> bool:
        with self._lock:
            if self._tokens.pop(token_id, None) is None:
                return False
            self._save()
        log.info("token %s revoked", token_id)
        return True

    def verify_token(self, token: str) -> TokenInfo | None:
        parts = _split_token(token)
        if parts is None:
            return None
        entry = self._tokens.get(parts[0])
        if entry is None or not hmac.compare_digest(entry.digest, token_digest(parts[1])):
            return None
        return entry.info()

    def write_local_token(self) -> Path:
        """Replace the CLI's token (root on the box reads it) with a new one."""
        with self._lock:
            for token_id in [t.id for t in self._tokens.values() if t.name == LOCAL_TOKEN_NAME]:
                del self._tokens[token_id]
        _info, secret = self.create_token(LOCAL_TOKEN_NAME)
        path = self.state_dir / LOCAL_TOKEN_FILE
        write_atomic(path, secret.encode() + b"\n", mode=0o600)
        return path


def read_local_token(state_dir: Path) -> str:
    return (Path(state_dir) / LOCAL_TOKEN_FILE).read_text().strip()


class SessionTable:
    """Server-side web sessions: the cookie carries only a random id, so a
    logout or a password change ends a session for good."""

    def __init__(
        self, idle_s: float = 3600, max_age_s: float = 12 * 3600, max_sessions: int = 32
    ) -> None:
        self.idle_s, self.max_age_s, self.max_sessions = idle_s, max_age_s, max_sessions
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[float, float]] = {}  # id -> (created, last seen)

    def open(self, now: float) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._expire(now)
            while len(self._sessions) >= self.max_sessions:  # the oldest goes
                del self._sessions[min(self._sessions, key=lambda k: self._sessions[k][0])]
            self._sessions[sid] = (now, now)
        return sid

    def touch(self, sid: str, now: float) -> bool:
        """True (and the idle time restarted) if `sid` is a live session."""
        with self._lock:
            times = self._sessions.get(sid)
            if times is None:
                return False
            created, seen = times
            if now - seen > self.idle_s or now - created > self.max_age_s:
                del self._sessions[sid]
                return False
            self._sessions[sid] = (created, now)
            return True

    def close(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def close_all(self) -> None:
        with self._lock:
            self._sessions.clear()

    def _expire(self, now: float) -> None:
        dead = [
            sid
            for sid, (created, seen) in self._sessions.items()
            if now - seen > self.idle_s or now - created > self.max_age_s
        ]
        for sid in dead:
            del self._sessions[sid]


class LoginLimiter:
    """Failed logins (and setup-token guesses) per client address in a
    sliding window; past the limit a client is refused until its oldest
    failure leaves the window. A global limit bounds a guesser that changes
    address (and the argon2 work it makes the gateway do)."""

    def __init__(
        self,
        per_client: int = 5,
        overall: int = 30,
        window_s: float = 60,
        max_clients: int = 1024,
    ) -> None:
        self.per_client, self.overall, self.window_s = per_client, overall, window_s
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def retry_after(self, client: str, now: float) -> float:
        """0 when `client` may try now, else the seconds to wait."""
        with self._lock:
            self._drop_old(now)
            waits = [0.0]
            mine = self._failures.get(client)
            if mine and len(mine) >= self.per_client:
                waits.append(mine[0] + self.window_s - now)
            if len(self._all) >= self.overall:
                waits.append(self._all[0] + self.window_s - now)
            return max(waits)

    def failed(self, client: str, now: float) -> None:
        with self._lock:
            self._drop_old(now)
            if client not in self._failures and len(self._failures) >= self.max_clients:
                self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(client, deque()).append(now)
            self._all.append(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _drop_old(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._all and self._all[0] <= cutoff:
            self._all.popleft()
        for client in list(self._failures):
            times = self._failures[client]
            while times and times[0] <= cutoff:
                times.popleft()
            if not times:
                del self._failures[client]
