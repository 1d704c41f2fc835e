"""The API key file and its reader (shared/api_keys.py)."""

from __future__ import annotations

import contextlib
import json
import stat
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from model_proxy.shared.api_keys import ApiKey, ApiKeyFile, ApiKeyReader
from model_proxy.shared.errors import ConfigError, TooManyFailures


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _owner(reader: ApiKeyReader, key: str) -> tuple[str, str] | None:
    entry = reader.verify(key)
    return None if entry is None else (entry.name, entry.role)


def test_a_key_added_verifies_as_its_owner_and_a_wrong_one_does_not(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    _, alice = keys.add("alice")
    _, root = keys.add("root", "admin")
    reader = ApiKeyReader(keys.path)
    assert _owner(reader, alice) == ("alice", "viewer")
    assert _owner(reader, root) == ("root", "admin")
    key_id = alice.split("_")[1]
    for wrong in (alice + "x", f"mpk_{key_id}_guess", "mpk__x", "Bearer", "", alice[:-1]):
        assert reader.verify(wrong) is None, wrong


def test_the_file_holds_salted_hashes_only_with_mode_0600(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    _, alice = keys.add("alice")
    _, bob = keys.add("bob")
    text = keys.path.read_text()
    secret_a, secret_b = alice.split("_", 2)[2], bob.split("_", 2)[2]
    assert secret_a not in text and secret_b not in text
    entries = json.loads(text)["keys"]
    assert entries[0]["salt"] != entries[1]["salt"]
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["api-keys.json"]  # no temporary left


def test_list_shows_names_roles_and_times_and_revoke_removes(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    assert keys.load() == []
    keys.add("alice")
    keys.add("root", "admin")
    assert [(key.name, key.role) for key in keys.load()] == [("alice", "viewer"), ("root", "admin")]
    assert all(key.created.endswith("+00:00") for key in keys.load())
    keys.revoke("alice")
    assert [key.name for key in keys.load()] == ["root"]


def test_a_duplicate_or_unknown_name_is_a_clear_error(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    keys.add("alice")
    with pytest.raises(ConfigError, match="'alice' exists already"):
        keys.add("alice", "admin")
    with pytest.raises(ConfigError, match="no key named 'carol'"):
        keys.revoke("carol")


def test_the_reader_rereads_a_changed_file_at_most_once_per_interval(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    _, alice = keys.add("alice")
    clock = Clock()
    reader = ApiKeyReader(keys.path, clock=clock)
    assert reader.verify(alice) is not None
    assert reader.cached(alice) is not None  # remembered: no scrypt the next time
    keys.revoke("alice")
    _, bob = keys.add("bob")
    clock.now = 0.5
    assert reader.verify(alice) is not None  # not checked again yet
    clock.now = 1.5
    assert reader.cached(alice) is None  # the change dropped what was remembered
    assert reader.verify(alice) is None
    assert _owner(reader, bob) == ("bob", "viewer")


def test_a_broken_file_accepts_no_key_rather_than_stopping(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    _, alice = keys.add("alice")
    keys.path.write_text("{not json")
    assert ApiKeyReader(keys.path).verify(alice) is None
    with pytest.raises(ConfigError, match="not an API key file"):
        keys.load()


def _add_key(path: str, name: str) -> None:
    ApiKeyFile(Path(path)).add(name)


def test_keys_added_by_processes_at_once_are_all_kept(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.json"
    names = [f"station-{n}" for n in range(6)]
    with ProcessPoolExecutor(max_workers=6) as pool:
        list(pool.map(_add_key, [str(path)] * len(names), names))
    assert sorted(key.name for key in ApiKeyFile(path).load()) == names


def test_wrong_secrets_for_a_known_id_are_checked_two_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    _, alice = keys.add("alice")
    key_id = alice.split("_")[1]
    reader = ApiKeyReader(keys.path, max_failures=100)
    running, most = 0, 0
    count = threading.Lock()
    original = ApiKey.matches

    def counted(self: ApiKey, secret: str) -> bool:
        nonlocal running, most
        with count:
            running += 1
            most = max(most, running)
        try:
            return original(self, secret)
        finally:
            with count:
                running -= 1

    monkeypatch.setattr(ApiKey, "matches", counted)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(reader.verify, [f"mpk_{key_id}_guess{n}" for n in range(16)]))
    assert answers == [None] * 16
    assert most == 2


def test_a_key_cannot_take_the_name_of_anonymous_callers(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    for name in ("anonymous@10.0.0.5", "Anonymous"):
        with pytest.raises(ConfigError, match="anonymous"):
            keys.add(name)
    assert keys.load() == []


def alice_and_bob(folder: Path) -> tuple[ApiKeyFile, str, str]:
    """The key file in ``folder`` with the viewer keys alice and bob; the file and both keys."""
    keys = ApiKeyFile(folder / "api-keys.json")
    return keys, keys.add("alice")[1], keys.add("bob")[1]


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every scrypt check of a secret append its key's name to the list returned."""
    checked: list[str] = []
    original = ApiKey.matches

    def counted(self: ApiKey, secret: str) -> bool:
        checked.append(self.name)
        return original(self, secret)

    monkeypatch.setattr(ApiKey, "matches", counted)
    return checked


def test_wrong_secrets_lock_a_key_id_for_the_window_without_scrypt_but_not_a_verified_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, alice, bob = alice_and_bob(tmp_path)
    clock = Clock()
    reader = ApiKeyReader(keys.path, max_failures=5, failure_window=60, clock=clock)
    assert reader.verify(alice) is not None  # verified before the flood
    checked = _count_checks(monkeypatch)
    bob_id, alice_id = bob.split("_")[1], alice.split("_")[1]
    for n in range(5):
        assert reader.verify(f"mpk_{bob_id}_wrong{n}") is None
        clock.now += 1
    for wrong in (f"mpk_{bob_id}_wrong-again", bob):  # even bob's own key, not verified yet
        with pytest.raises(TooManyFailures) as raised:
            reader.verify(wrong)
        assert raised.value.retry_after == 55 and raised.value.code == "too_many_failures"
    assert checked == ["bob"] * 5  # refused without scrypt
    # someone who knows alice's id cannot lock her out: her key is answered from memory
    for n in range(10):
        with contextlib.suppress(TooManyFailures):
            reader.verify(f"mpk_{alice_id}_wrong{n}")
    assert reader.cached(alice) is not None
    assert _owner(reader, alice) == ("alice", "viewer")
    clock.now += 55  # the window of the first failure has passed
    assert _owner(reader, bob) == ("bob", "viewer")


def test_a_change_of_the_file_keeps_the_verified_keys_it_did_not_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, alice, bob = alice_and_bob(tmp_path)
    clock = Clock()
    reader = ApiKeyReader(keys.path, clock=clock)
    assert reader.verify(alice) is not None and reader.verify(bob) is not None
    checked = _count_checks(monkeypatch)
    keys.add("carol")
    keys.revoke("bob")
    clock.now += 2
    assert reader.cached(alice) is not None
    assert _owner(reader, alice) == ("alice", "viewer")
    assert reader.cached(bob) is None  # revoked
    assert reader.verify(bob) is None
    assert checked == []  # alice was not checked again; bob's id is gone


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("oidc:3f1c9a52", "oidc:"),
        ("anonymous@10.0.0.5", "anonymous"),
        ("Anonymous", "anonymous"),
        ("", "empty"),
        (" ops", "spaces"),
        (7, "not text"),
    ],
)
def test_a_hand_edited_name_of_another_principal_makes_the_file_refused(
    tmp_path: Path, name: object, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    _, alice = keys.add("alice")
    entry, _ = keys.add("mallory")
    text = keys.path.read_text().replace('"mallory"', json.dumps(name))
    keys.path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        keys.load()
    assert str(keys.path) in raised.value.message and entry.id in raised.value.message
    assert problem in raised.value.message
    # the API's reader logs it and accepts no key from that file, alice's neither
    assert ApiKeyReader(keys.path).verify(alice) is None
    assert entry.id in caplog.text


def test_a_role_other_than_ours_in_the_file_is_refused_naming_the_entry(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    entry, _ = keys.add("ops")
    keys.path.write_text(keys.path.read_text().replace('"viewer"', '"root"'))
    with pytest.raises(ConfigError, match=f"{entry.id}.*'ops'.*role"):
        keys.load()
