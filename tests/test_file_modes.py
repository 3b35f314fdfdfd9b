"""Files holding decrypted partner data, the search log, token hashes, keys and stage logs are
the owner's alone: 0600 in 0700 directories, also when an earlier version left them 0644."""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
from contextlib import closing
from pathlib import Path

from consumers.index import index_path, open_index
from mutualaid import tokens
from mutualaid.crypto import generate_hash_key, generate_keypair
from mutualaid.processes import spawn
from mutualaid.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_index_and_its_journal_are_the_owners_alone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", metrics_port=0)
    index = open_index(settings, "CA0990100")
    try:
        index.record_search("det.rivera", "case 24-001", {"plate": "7ABC123"}, 0)
        path = index_path(settings, "CA0990100")
        wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
        assert wal.exists() and shm.exists()  # written, not yet checkpointed
        assert {p.name: mode(p) for p in (path, wal, shm)} == {
            path.name: 0o600,
            wal.name: 0o600,
            shm.name: 0o600,
        }
        assert mode(path.parent) == 0o700
    finally:
        index.close()


def test_an_index_left_readable_by_others_is_made_private_when_opened(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", metrics_port=0)
    path = index_path(settings, "CA0990100")
    path.parent.mkdir(parents=True)
    os.chmod(path.parent, 0o755)
    with closing(sqlite3.connect(path)):
        pass
    os.chmod(path, 0o644)
    open_index(settings, "CA0990100").close()
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)


def test_token_files_keys_and_stage_logs_are_private(tmp_path: Path) -> None:
    cameras = tmp_path / "cameras.json"
    tokens.issue(cameras, "CA0990100", "CAM7")
    assert mode(cameras) == 0o600

    key_id = generate_keypair("CA0990100", tmp_path / "public", tmp_path / "private")
    private = tmp_path / "private" / "ca0990100"
    assert mode(private) == 0o700
    assert {mode(p) for p in private.iterdir()} == {0o600}, key_id
    generate_hash_key(tmp_path / "hash.key")
    assert mode(tmp_path / "hash.key") == 0o600

    log = tmp_path / "stage.log"
    spawn([sys.executable, "-c", "print('started')"], log=log).wait(10)
    assert log.read_text() == "started\n"
    assert mode(log) == 0o600
