"""Every project error has one base carrying its exit code; the command line maps them once."""

from __future__ import annotations

import fcntl
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import consumers
import mutualaid
import producers
import streams
from cli.main import main
from mutualaid.agencies import UnknownAgency
from mutualaid.auditlog import INSTANCE_FILE, InstanceInUse, claim_instance
from mutualaid.crypto import KeyFileError, generate_keypair, load_hash_key, load_keyring
from mutualaid.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_REFUSED, MutualaidError
from mutualaid.settings import Settings
from mutualaid.topics import InvalidOri


def project_exceptions() -> list[type[BaseException]]:
    found = []
    for package in (mutualaid, producers, streams, consumers):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == info.name:
                    found.append(cls)
    return found


def test_every_project_exception_derives_from_the_one_base() -> None:
    found = project_exceptions()
    assert len(found) >= 17  # the walk really found the classes (it cannot pass on nothing)
    strays = [c.__qualname__ for c in found if not issubclass(c, MutualaidError)]
    assert strays == []
    for cls in found:
        assert cls.exit_code in (EXIT_FAILURE, EXIT_CONFIG, EXIT_REFUSED), cls


def test_builtin_bases_callers_rely_on_are_kept() -> None:
    assert issubclass(InvalidOri, ValueError)  # check_ori callers catch ValueError
    assert issubclass(UnknownAgency, KeyError)  # registry lookups are mapping lookups
    assert InvalidOri.exit_code == UnknownAgency.exit_code == EXIT_CONFIG


def test_a_garbage_public_key_stops_the_router_with_exit_2_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUTUALAID_DATA_DIR", str(tmp_path))
    public = tmp_path / "keys" / "public"
    public.mkdir(parents=True)
    (public / "ca0990200.k1.pub").write_text("not a key\n")
    assert main(["router"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith(f"mutualaid: {public / 'ca0990200.k1.pub'} is not an X25519 public key")
    assert "Traceback" not in err


def test_unreadable_key_files_are_key_file_errors(tmp_path: Path) -> None:
    generate_keypair("CA0990200", tmp_path / "pub", tmp_path / "priv")
    (tmp_path / "priv" / "ca0990200" / "zz.pem").write_text("-----BEGIN nothing")
    with pytest.raises(KeyFileError, match=r"zz\.pem is not an X25519 private key"):
        load_keyring("CA0990200", tmp_path / "priv")
    (tmp_path / "hash.key").write_text("not hex")
    with pytest.raises(KeyFileError, match=r"hash\.key is not a hash key"):
        load_hash_key(tmp_path / "hash.key")


def test_an_existing_hash_key_is_refused_through_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUTUALAID_DATA_DIR", str(tmp_path))
    assert main(["keys", "hash-key"]) == 0
    assert main(["keys", "hash-key"]) == EXIT_FAILURE
    assert "not overwritten" in capsys.readouterr().err


def test_a_mistyped_log_level_stops_a_stage_naming_the_variable_and_the_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUTUALAID_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MUTUALAID_LOG_LEVEL", "verbose")
    assert main(["router"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "$MUTUALAID_LOG_LEVEL: log_level: 'verbose' is not allowed" in err
    assert "'debug', 'info', 'warning' or 'error'" in err and "Traceback" not in err


def test_a_listing_piped_into_head_stops_quietly() -> None:
    # The reader leaves after a few bytes: no traceback, and the status a shell shows for a
    # writer stopped by SIGPIPE. The pipe holds one page, less than the listing, so the writer
    # is still writing when the reader leaves.
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)
    with subprocess.Popen(
        [sys.executable, "-m", "cli", "acls"], stdout=write_end, stderr=subprocess.PIPE
    ) as proc:
        os.close(write_end)
        assert os.read(read_end, 100).startswith(b"User:")
        os.close(read_end)
        errors = proc.stderr.read() if proc.stderr else b""
    assert proc.returncode == 141
    assert errors == b""


HOLD_INSTANCE = """
import sys
from pathlib import Path
from mutualaid.auditlog import claim_instance
from mutualaid.settings import Settings
settings = Settings(data_dir=Path(sys.argv[1]), audit_instance=sys.argv[2] or None)
print(*claim_instance(settings, "router"), flush=True)
sys.stdin.readline()
"""


def test_workers_of_one_data_directory_claim_instances_of_their_own(tmp_path: Path) -> None:
    # Another process holds the kept instance: this one takes the next, new; once that process
    # ends (however: the kernel releases its lock), its instance is free again and not new.
    def holder(instance: str = "") -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_INSTANCE, str(tmp_path), instance],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        return proc

    first = holder()
    base = (tmp_path / INSTANCE_FILE).read_text().strip()
    assert claim_instance(Settings(data_dir=tmp_path), "router") == (f"{base}-2", True)
    # The matcher's chain in that directory is its own, and it has written none: nothing to
    # read back (`up` runs every stage on one data directory).
    assert claim_instance(Settings(data_dir=tmp_path), "matcher") == (base, True)
    first.kill()
    first.wait()
    again = subprocess.run(
        [sys.executable, "-c", HOLD_INSTANCE, str(tmp_path), ""],
        input="\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert again.stdout.split() == [base, "False"]
    # A fixed audit_instance another process runs as: refused, saying what to do.
    named = holder("w1")
    with pytest.raises(InstanceInUse, match="give each worker its own audit_instance"):
        claim_instance(Settings(data_dir=tmp_path, audit_instance="w1"), "router")
    named.kill()
    named.wait()


def test_a_data_directory_older_than_claims_reads_every_chain_back(tmp_path: Path) -> None:
    # Made before claims were kept: its instance file, no claim files. A stage may have written
    # from it then, so none of its first-slot chains is taken as new; a second slot is.
    (tmp_path / INSTANCE_FILE).write_text("a1b2c3d4\n")
    assert claim_instance(Settings(data_dir=tmp_path), "router") == ("a1b2c3d4", False)
    assert claim_instance(Settings(data_dir=tmp_path), "matcher") == ("a1b2c3d4", False)
