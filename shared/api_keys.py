"""API keys: the key file (``MODEL_PROXY_API_KEYS_FILE``) and the reader that verifies keys.

A key reads ``mpk_<id>_<secret>``. The file keeps, per key, its ``id`` (so that verifying a
presented key looks up one entry), its name, role and creation time, and the secret only as a
salted scrypt hash; never the key itself. The file is written whole to a temporary file with
mode 0600 and moved into place, so a reader never sees half of it.

:class:`ApiKeyReader` is what the API holds: it rereads the file when it changes (checked at most
every ``check_interval`` seconds), so a revoked key stops working within seconds without a
restart, and it remembers keys it verified (by a sha256 of the key, never the key) so that a
request does not pay scrypt each time; a change of the file forgets those whose entry changed or
went (a revoked key), and keeps the others.

Wrong secrets cost scrypt, so they are limited per key id: after ``max_failures`` of them within
``failure_window`` seconds, further attempts for that id are refused with
:class:`TooManyFailures` without a check until the window has passed. A key verified before is
answered from memory first, so its holder is not locked out by someone who knows its id.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from model_proxy.shared.errors import ConfigError, TooManyFailures

__all__ = [
    "ANONYMOUS_NAME_PREFIX",
    "OIDC_NAME_PREFIX",
    "ApiKey",
    "ApiKeyFile",
    "ApiKeyReader",
    "Role",
]

log = logging.getLogger(__name__)

Role = Literal["viewer", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
_PREFIX = "mpk"
OIDC_NAME_PREFIX = "oidc:"  # the names of token holders (broker/bearer_tokens.py), never of keys
ANONYMOUS_NAME_PREFIX = "anonymous"  # anonymous callers are anonymous@<address>: never a key
# scrypt with 16 MiB of memory: tens of milliseconds per check, which the cache pays once per key
_UNREAD = object()
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}


@dataclass(frozen=True)
class ApiKey:
    """One entry of the key file: no key, only its id and the salted hash of its secret."""

    id: str
    name: str
    role: Role
    created: str  # ISO 8601, UTC
    salt: str  # hex
    hash: str  # hex

    def matches(self, secret: str) -> bool:
        presented = _hash(secret, bytes.fromhex(self.salt))
        return hmac.compare_digest(presented, bytes.fromhex(self.hash))


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def _split(key: str) -> tuple[str, str] | None:
    """The id and secret of a key of our form, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a key's name (it would take over another principal), or None."""
    if not name.strip() or name != name.strip():
        return "is empty or has spaces around it"
    if name.startswith(OIDC_NAME_PREFIX):
        return f"cannot start with {OIDC_NAME_PREFIX!r}: it names the holders of OIDC tokens"
    if name.lower().startswith(ANONYMOUS_NAME_PREFIX):
        return (
            f"cannot start with {ANONYMOUS_NAME_PREFIX!r}: it names anonymous callers (by their "
            "address)"
        )
    return None


class ApiKeyFile:
    """The key file, as the ``model-proxy keys`` commands change it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[ApiKey]:
        """The entries; none when the file does not exist. ConfigError when it is not ours."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {self.path}: {exc.strerror}") from None
        try:
            entries = json.loads(text)["keys"]
            keys = [ApiKey(**entry) for entry in entries]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{self.path} is not an API key file") from None
        for key in keys:
            problem = _name_problem(key.name) if isinstance(key.name, str) else "is not text"
            if problem is None and key.role not in ROLES:
                problem = f"has a role other than {' or '.join(ROLES)}"
            if problem is not None:
                raise ConfigError(f"{self.path}: the key {key.id!r} named {key.name!r} {problem}")
        return keys

    def add(self, name: str, role: Role = "viewer") -> tuple[ApiKey, str]:
        """A new key named ``name``: its entry, and the key itself (shown once, stored never)."""
        name = name.strip()
        if not name:
            raise ConfigError("a key needs a name")
        problem = _name_problem(name)
        if problem is not None:
            raise ConfigError(f"a key's name {problem}")
        if role not in ROLES:
            raise ConfigError(f"a key's role is {' or '.join(ROLES)}, not {role!r}")
        with self._changing():
            return self._add(name, role)

    def _add(self, name: str, role: Role) -> tuple[ApiKey, str]:
        keys = self.load()
        if any(key.name == name for key in keys):
            raise ConfigError(f"a key named {name!r} exists already (revoke it first)")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), os.urandom(16)
        entry = ApiKey(
            id=key_id,
            name=name,
            role=role,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            salt=salt.hex(),
            hash=_hash(secret, salt).hex(),
        )
        self._write([*keys, entry])
        return entry, f"{_PREFIX}_{key_id}_{secret}"

    def revoke(self, name: str) -> None:
        with self._changing():
            keys = self.load()
            kept = [key for key in keys if key.name != name]
            if len(kept) == len(keys):
                raise ConfigError(f"no key named {name!r} in {self.path}")
            self._write(kept)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold a lock on the file's folder while the file is read, changed and written, so two
        ``keys`` commands at once cannot lose each other's change (the file itself is replaced,
        so it cannot carry the lock; the folder does, and no lock file is left behind)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, keys: list[ApiKey]) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"keys": [asdict(key) for key in keys]}, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class ApiKeyReader:
    """Verifies presented keys against the key file, rereading it when it changes.

    ``concurrent_checks`` scrypt checks run at once (a flood of wrong secrets waits here instead
    of taking every thread and 16 MiB each); ``max_failures`` wrong secrets for one key id within
    ``failure_window`` seconds refuse further unverified attempts for it (see the module)."""

    def __init__(
        self,
        path: Path,
        *,
        check_interval: float = 1.0,
        concurrent_checks: int = 2,
        max_failures: int = 5,
        failure_window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = ApiKeyFile(path)
        self._interval = check_interval
        self._max_failures = max_failures
        self._window = failure_window
        self._clock = clock
        self._lock = threading.Lock()
        self._checked: float | None = None
        self._signature: tuple[int, int, int, int] | object | None = _UNREAD
        self._keys: dict[str, ApiKey] = {}
        self._verified: dict[bytes, ApiKey] = {}
        self._failures: dict[str, deque[float]] = {}  # by key id: times of recent wrong secrets
        self._checks = threading.BoundedSemaphore(concurrent_checks)

    def has_keys(self) -> bool:
        self._refresh()
        return bool(self._keys)

    def cached(self, key: str) -> ApiKey | None:
        """The entry of a key verified before (no scrypt), else None."""
        self._refresh()
        return self._verified.get(hashlib.sha256(key.encode()).digest())

    def knows(self, key: str) -> bool:
        """Whether ``key`` has our form and names a key id of the file (cheap: no scrypt)."""
        self._refresh()
        parts = _split(key)
        return parts is not None and parts[0] in self._keys

    def check_allowed(self, key: str) -> None:
        """TooManyFailures when ``key``'s id had too many wrong secrets a moment ago (cheap:
        no scrypt; the API asks it before it queues a check)."""
        parts = _split(key)
        if parts is None:
            return
        with self._lock:
            wait = self._lockout(parts[0], self._clock())
        if wait is not None:
            raise TooManyFailures(
                "too many wrong secrets were sent for this key a moment ago; try again later",
                retry_after=wait,
            )

    def verify(self, key: str) -> ApiKey | None:
        """The entry of ``key`` (its name and role), or None when it is not a valid key;
        TooManyFailures when its id is refused for a while (see the module)."""
        self._refresh()
        digest = hashlib.sha256(key.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            return known
        parts = _split(key)
        entry = self._keys.get(parts[0]) if parts else None
        if parts is None or entry is None:
            return None
        self.check_allowed(key)
        with self._checks:
            matches = entry.matches(parts[1])
        with self._lock:
            if not matches:
                failures = self._failures.setdefault(entry.id, deque(maxlen=self._max_failures))
                failures.append(self._clock())
                return None
            if self._keys.get(entry.id) == entry:  # not revoked while hashing
                self._verified[digest] = entry
        return entry

    def _lockout(self, key_id: str, now: float) -> int | None:
        """Whole seconds until ``key_id`` may be tried again, None when it may now (with the
        lock held)."""
        failures = self._failures.get(key_id)
        if failures is None:
            return None
        while failures and now - failures[0] >= self._window:
            failures.popleft()
        if not failures:
            del self._failures[key_id]
            return None
        if len(failures) < self._max_failures:
            return None
        return max(1, math.ceil(failures[0] + self._window - now))

    def _refresh(self) -> None:
        now = self._clock()
        if self._checked is not None and now - self._checked < self._interval:
            return
        with self._lock:
            self._checked = now
            signature = self._stat()
            if signature == self._signature:
                return
            self._signature = signature
            try:
                keys = {key.id: key for key in self._file.load()}
            except ConfigError as exc:
                log.error("%s: no API key is accepted until it is fixed", exc.message)
                keys = {}
            self._keys = keys
            # a key whose entry is unchanged stays verified; a revoked or changed one does not
            self._verified = {
                digest: entry
                for digest, entry in self._verified.items()
                if keys.get(entry.id) == entry
            }
            self._failures = {
                key_id: times for key_id, times in self._failures.items() if key_id in keys
            }

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = self._file.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
