"""Reading the agreement folder live: editor files are not agreements, and whatever goes wrong
reading it keeps the last good policy, logged with file, field and fix (issue #11, case 7)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mutualaid.configfile import is_editor_file
from mutualaid.settings import Settings
from streams.worker import PolicyWatcher
from support.events import MESA, agreement
from support.routing import REGISTRY, write_agreements

GOOD = {"a.yaml": [agreement("good")]}


def watcher(tmp_path: Path) -> tuple[PolicyWatcher, Settings]:
    write_agreements(tmp_path / "agreements", GOOD)
    settings = Settings(agreements_dir=tmp_path / "agreements")
    return PolicyWatcher(settings, REGISTRY, logging.getLogger("test-reload")), settings


def editor_files(folder: Path) -> None:
    """What Emacs, vim and others leave beside a file being edited, none of it valid."""
    (folder / ".#a.yaml").symlink_to("root@host.1234:1700000000")  # Emacs lock: dangling link
    (folder / "#a.yaml#").write_text("agreements: [")  # Emacs autosave
    (folder / "a.yaml~").write_text("agreements: [")  # backup
    (folder / ".a.yaml.swp").write_bytes(b"\x00b0VIM 9.0")  # vim swap
    (folder / ".hidden.yaml").write_text("not: an agreement file")


@pytest.mark.parametrize(
    "name", [".#a.yaml", "#a.yaml#", "a.yaml~", ".a.yaml.swp", ".a.yaml.swx", ".hidden.yaml"]
)
def test_editor_file_names(name: str) -> None:
    assert is_editor_file(name)
    assert not is_editor_file("a.yaml")


def test_editor_files_are_ignored_at_start_and_on_reload(tmp_path: Path) -> None:
    w, settings = watcher(tmp_path)
    editor_files(settings.agreements_dir)
    assert w.poll() is None  # nothing but editor files changed: no reload
    write_agreements(settings.agreements_dir, {"b.yaml": [agreement("second", partners=[MESA])]})
    reloaded = w.poll()
    assert reloaded is not None
    assert [a.id for a in reloaded.agreements] == ["good", "second"]


def test_start_up_with_a_dangling_lock_link_works(tmp_path: Path) -> None:
    """Issue case 7: restart was refused while an editor's `.#name.yaml` link existed."""
    folder = write_agreements(tmp_path / "agreements", GOOD)
    editor_files(folder)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "agreements", "check"],
        capture_output=True,
        text=True,
        env={"MUTUALAID_AGREEMENTS_DIR": str(folder), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 agreements in" in result.stdout


def dangling_link(folder: Path) -> None:
    (folder / "b.yaml").symlink_to(folder / "gone.yaml")


def removed_file(folder: Path) -> None:
    (folder / "a.yaml").unlink()
    (folder / "a.yaml").symlink_to(folder / "a.yaml.moved")  # listed, then not there


def half_written(folder: Path) -> None:
    text = yaml.safe_dump({"agreements": [agreement("b", partners=[MESA])]})
    (folder / "b.yaml").write_text(text[: len(text) // 2])


def invalid_content(folder: Path) -> None:
    write_agreements(folder, {"b.yaml": [agreement("b", partners=["ZZ1234567"])]})


def a_folder_named_yaml(folder: Path) -> None:
    (folder / "b.yaml").mkdir()


def folder_gone(folder: Path) -> None:
    shutil.rmtree(folder)


@pytest.mark.parametrize(
    ("break_it", "logged"),
    [
        (dangling_link, "b.yaml: file not found (or a link to a file that is not there)"),
        (removed_file, "a.yaml: file not found"),
        (half_written, "b.yaml:"),
        (invalid_content, "b.yaml:6: agreements[0].partners: ['ZZ1234567'] is not allowed"),
        (a_folder_named_yaml, "b.yaml: cannot be read: Is a directory"),
        (folder_gone, "agreements: folder not found\n  Fix: create it, or set agreements_dir"),
    ],
)
def test_a_bad_folder_keeps_the_last_good_policy_and_says_why(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    break_it: Callable[[Path], None],
    logged: str,
) -> None:
    w, settings = watcher(tmp_path)
    break_it(settings.agreements_dir)
    with caplog.at_level(logging.ERROR, "test-reload"):
        assert w.poll() is None
    (record,) = caplog.records
    assert "were NOT applied; still using the previous ones" in record.getMessage()
    assert logged in record.getMessage()
    assert "Fix:" in record.getMessage()
    # Fixed: the next poll applies it.
    if settings.agreements_dir.exists():
        shutil.rmtree(settings.agreements_dir)
    write_agreements(settings.agreements_dir, {"c.yaml": [agreement("fixed")]})
    fixed = w.poll()
    assert fixed is not None and [a.id for a in fixed.agreements] == ["fixed"]


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX users")
def test_an_unreadable_file_keeps_the_last_good_policy(tmp_path: Path) -> None:
    """Permissions do not bind root, so this runs the watcher as the unprivileged user
    ``nobody`` in a child process (skipped where the test cannot switch users)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the child as nobody")
    tmp_path.chmod(0o755)
    folder = write_agreements(tmp_path / "agreements", GOOD)
    folder.chmod(0o755)
    (folder / "a.yaml").chmod(0o644)
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from mutualaid.agencies import load_registry\n"
        "from mutualaid.settings import Settings\n"
        "from streams.worker import PolicyWatcher\n"
        "logging.basicConfig(stream=sys.stdout)\n"
        f"s = Settings(agreements_dir=Path({str(folder)!r}))\n"
        "registry = load_registry(Path('deploy/agencies.yaml'))\n"
        "w = PolicyWatcher(s, registry, logging.getLogger('w'))\n"
        f"Path({str(folder / 'b.yaml')!r}).write_text('agreements: []')\n"
        f"Path({str(folder / 'b.yaml')!r}).chmod(0)\n"
        "print('reloaded' if w.poll() else 'kept')\n"
    )
    folder.chmod(0o777)
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, user=65534
        )
    except PermissionError as exc:  # the virtualenv is not readable by nobody
        pytest.skip(f"nobody cannot run the project's Python here: {exc}")
    if result.returncode != 0:
        pytest.skip(f"nobody cannot run the project here: {result.stderr[-300:]}")
    assert "b.yaml: cannot be read: permission denied" in result.stdout, result.stderr
    assert "Fix: let the user the stage runs as read it" in result.stdout
    assert result.stdout.strip().endswith("kept")


def test_a_permission_error_keeps_the_last_good_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same as above where no unprivileged user can run the project (this machine runs the
    tests as root, whom permissions do not bind): reading the file raises PermissionError as
    the operating system would. The one fake in this file, for that reason."""
    w, settings = watcher(tmp_path)
    unreadable = settings.agreements_dir / "b.yaml"
    unreadable.write_text("agreements: []")
    real_read = Path.read_text

    def read_text(path: Path, *args: object, **kwargs: object) -> str:
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with caplog.at_level(logging.ERROR, "test-reload"):
        assert w.poll() is None
    assert "b.yaml: cannot be read: permission denied" in caplog.text
    assert "Fix: let the user the stage runs as read it" in caplog.text
