"""Sources and checkpoints, without a broker: where a read starts, and what a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.checkpoint import (
    CheckpointStore,
    DirectoryPosition,
    FilePosition,
    WatermarkPosition,
)
from producers.sources import DocumentDirectory, LineFile


def no_follow() -> bool:
    return False


@pytest.mark.parametrize(
    "position",
    [
        FilePosition("abc", 120, 7),
        DirectoryPosition(base={"0001.json": "f1", "0002.json": "f2"}),
        WatermarkPosition("2026-11-24T21:14:03.120000+00:00", 42),
        WatermarkPosition("2026-11-24T21:14:03", "R-9"),
    ],
)
def test_checkpoints_round_trip_as_typed_json(tmp_path: Path, position) -> None:
    store = CheckpointStore(tmp_path)
    assert store.topic_offsets("c") is None
    store.save("c", position, "somewhere", {1: 40, 0: 17})
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["type"] == position.type and saved["source"] == "somewhere"
    assert saved["topic_offsets"] == {"0": 17, "1": 40}
    assert store.topic_offsets("c") == {0: 17, 1: 40}
    loaded = store.load("c")
    assert type(loaded) is type(position)
    assert loaded.to_json() == position.to_json()
    assert not (tmp_path / "c.tmp").exists()


def test_an_untyped_checkpoint_from_before_is_a_file_position(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text(
        '{"source": "x.csv", "position": {"fingerprint": "ab", "offset": 9, "line": 2}}'
    )
    assert CheckpointStore(tmp_path).load("old") == FilePosition("ab", 9, 2)


def test_line_file_resumes_after_the_checkpointed_line(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"h1,h2\na,1\nb,2\n\nc,3\n")
    source = LineFile(path)
    items = list(source.items(source.start(None), no_follow))
    assert [(i.raw, i.line, i.position) for i in items] == [
        (b"a,1", 2, "line 2"),
        (b"b,2", 3, "line 3"),
        (b"c,3", 5, "line 5"),
    ]
    resumed = list(source.items(source.start(items[0].after), no_follow))
    assert [i.raw for i in resumed] == [b"b,2", b"c,3"]
    # A directory checkpoint means nothing to a file: start from the top.
    assert source.start(DirectoryPosition()) == FilePosition(source.fingerprint, 6, 1)


def test_directory_reads_new_and_changed_documents_once(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    for name, body in (("0002.json", b"two"), ("0001.json", b"one"), ("0003.json.part", b"x")):
        (drop / name).write_bytes(body)
    (drop / ".hidden.json").write_bytes(b"h")
    source = DocumentDirectory(drop, "*.json")
    first = list(source.items(source.start(None), no_follow))
    assert [(i.raw, i.line, i.position) for i in first] == [
        (b"one", 1, "file 0001.json"),
        (b"two", 2, "file 0002.json"),
    ]
    # Each item's position covers exactly the documents up to and including it.
    assert first[0].after.done == {"0001.json": first[0].after.done["0001.json"]}
    checkpoint = first[-1].after
    assert set(checkpoint.to_json()["done"]) == {"0001.json", "0002.json"}

    (drop / "0003.json.part").rename(drop / "0003.json")  # dropped complete by a rename
    (drop / "0001.json").write_bytes(b"one, corrected")  # same name, new content
    (drop / "0002.json").unlink()  # archived by the operator
    again = list(source.items(source.start(checkpoint), no_follow))
    assert [i.raw for i in again] == [b"one, corrected", b"x"]
    assert set(again[-1].after.to_json()["done"]) == {"0001.json", "0003.json"}
    assert list(source.items(source.start(again[-1].after), no_follow)) == []


def test_a_followed_directory_picks_up_documents_dropped_later(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_bytes(b"<a/>")
    source = DocumentDirectory(tmp_path, "*.xml")
    calls = []

    def follow() -> bool:  # called each time the directory has nothing new
        calls.append(len(calls))
        if len(calls) == 1:
            (tmp_path / "b.xml.part").write_bytes(b"<b/>")
            (tmp_path / "b.xml.part").rename(tmp_path / "b.xml")
        return len(calls) < 3

    items = list(source.items(source.start(None), follow))
    assert [i.raw for i in items] == [b"<a/>", b"<b/>"]
    assert calls == [0, 1, 2]
