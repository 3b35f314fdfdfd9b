from pathlib import Path

import pytest

from mutualaid.agencies import load_registry
from mutualaid.configfile import ConfigError
from mutualaid.settings import load_settings


def test_defaults_run_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUTUALAID_CONFIG", raising=False)
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.schema_registry_url is None
    assert settings.agencies_file == Path("deploy/agencies.yaml")


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("bootstrap_servers: file:9092\npartitions: 8\n")
    monkeypatch.setenv("MUTUALAID_BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings(config)
    assert settings.bootstrap_servers == "env:9092"
    assert settings.partitions == 8


def test_bad_settings_file_names_file_line_field_and_fix(tmp_path: Path) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("bootstrap_servers: a:1\npartitions: lots\nbroker_prot: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert f"{config}:2: partitions: 'lots' is not allowed" in text
    assert f"{config}:3: broker_prot: is not a known setting" in text
    assert "Fix: remove `broker_prot` or correct its spelling; allowed keys here:" in text
    assert len(caught.value.problems) == 2


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUTUALAID_BROKER_PORT", "99999")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(
        "$MUTUALAID_BROKER_PORT: broker_port: '99999' is not allowed: Input should be less than"
    )


def test_settings_file_that_is_not_yaml(tmp_path: Path) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("partitions: [1,\n")
    with pytest.raises(ConfigError, match=r"m.yaml:\d+: not valid YAML"):
        load_settings(config)


def test_shipped_registry_loads() -> None:
    registry = load_registry(Path("deploy/agencies.yaml"))
    assert registry.oris == ["CA0990100", "CA0990200", "NV0990300", "DC0990400"]
    assert registry.get("ca0990200").type == "county"


def test_bad_registry_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "agencies.yaml"
    bad.write_text(
        "agencies:\n"
        "  - ori: CA0990100\n"
        "    name: Riverbend PD\n"
        "    state: ZZ\n"
        "    type: city\n"
        "  - name: No ORI\n"
        "    state: CA\n"
        "    type: local\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_registry(bad)
    lines = str(caught.value).splitlines()
    assert (
        f"{bad}:4: agencies[0].state: 'ZZ' is not allowed: 'ZZ' is not a two-letter USPS "
        "state or territory code" in lines
    )
    assert (
        f"{bad}:5: agencies[0].type: 'city' is not allowed: Input should be 'local', "
        "'county', 'state' or 'federal'" in lines
    )
    assert f"{bad}:6: agencies[1].ori: is required but missing" in lines
    assert "  Fix: add `ori:` (NCIC ORI, 9 characters, e.g. CA0194200)" in lines


def test_duplicate_ori_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "agencies.yaml"
    agency = "  - {ori: CA0990100, name: A, state: CA, type: local}\n"
    bad.write_text("agencies:\n" + agency + agency)
    with pytest.raises(ConfigError, match="ORI CA0990100 is listed twice"):
        load_registry(bad)
