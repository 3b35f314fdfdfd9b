"""`mutualaid connect` refuses contradictory options before it touches the broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alpr", "--sql", "sqlite://"], "--sql polls CAD or RMS tables"),
        (["rms", "--sql", "sqlite://"], "--sql needs --table"),
        (["cad", "--source", "{tmp}", "--table", "t"], "--table goes with --sql"),
        (["cad", "--source", "{tmp}", "--mapping", "m.yaml"], "--mapping is for alpr"),
        (["rms", "--source", "{tmp}/missing.xml"], "no such file or directory"),
        (["rms", "--source", "{tmp}", "--timezone", "Mars/Olympus"], "is not an IANA zone"),
        (
            ["rms", "--sql", "sqlite:///{tmp}/none.db", "--table", "reports"],
            "cannot poll table 'reports'",
        ),
    ],
)
def test_connect_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["connect", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert main([*argv[:2], "--agency", "CA0990100", *argv[2:]]) == 2
    assert message in capsys.readouterr().err
