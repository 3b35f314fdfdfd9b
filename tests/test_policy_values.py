"""Values in agreements, rules and the registry are checked, not just their shape (issue #11,
case 7: `state: Nevada` passed the check and matched no agency)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mutualaid.agencies import Registry
from mutualaid.configfile import ConfigError
from mutualaid.policy import load_policy
from support.events import agreement
from support.routing import REGISTRY


def problems(tmp_path: Path, **extra: object) -> str:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"agreements": [agreement("x", **extra)]}))
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path, REGISTRY)
    return str(caught.value)


def test_a_state_name_where_a_code_belongs_names_the_code(tmp_path: Path) -> None:
    text = problems(tmp_path, partner_classes=[{"type": "local", "state": "Nevada"}])
    assert "agreements[0].partner_classes[0].state: 'Nevada' is not allowed" in text
    assert "Nevada is NV" in text
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "a.yaml").write_text(
        yaml.safe_dump({"agreements": [agreement("x", partner_classes=[{"state": "nv"}])]})
    )
    (loaded,) = load_policy(ok, REGISTRY).agreements
    assert loaded.partner_classes[0].state == "NV"


def test_oris_are_checked_for_shape_and_against_the_registry(tmp_path: Path) -> None:
    assert "is not an NCIC ORI" in problems(tmp_path, partners=["CA09901"])
    assert "ZZ1234567 is not in the agency registry" in problems(tmp_path, partners=["ZZ1234567"])


def test_the_registry_checks_states_and_assurance_dates() -> None:
    base = {"ori": "CA0990100", "name": "PD", "type": "local"}
    with pytest.raises(ValueError, match="California is CA"):
        Registry.model_validate({"agencies": [{**base, "state": "California"}]})
    bad_dates = {"rule": "r", "document": "d", "signed": "2026-05-01", "expires": "2026-01-01"}
    with pytest.raises(ValueError, match="expires 2026-01-01 is not after signed 2026-05-01"):
        Registry.model_validate({"agencies": [{**base, "state": "CA", "assurances": [bad_dates]}]})
