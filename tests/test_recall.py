"""Withdrawals and recalls on the real broker, router and projector: whatever reduces what a
partner may hold reaches what it already holds, and its index no longer finds the open copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from conftest import Region, mutualaid_cli, publish_source, running_stages, wait_for
from consumers.query import Criteria, Hit
from consumers.search import SearchRequest, run_search
from mutualaid.events import new_envelope
from mutualaid.topics import Kind

NOW = datetime.now(UTC).replace(microsecond=0)
SSN = "123-45-6789"


def report(owner: str, record_id: str, version: int, labels: list[str] = ()) -> dict:
    """An RMS report naming an adult with an SSN, as a records system would publish it."""
    envelope = new_envelope(
        source_ori=owner,
        source_system="test",
        kind=Kind.RMS_RECORD,
        record_id=record_id,
        version=version,
        occurred_at=NOW - timedelta(hours=2),
        labels=list(labels),
    )
    person = {"role": "ARRESTEE", "first_name": "John", "last_name": "Doe", "dob": "1980-05-01"}
    return {
        "envelope": envelope,
        "body": {
            "incident_number": record_id,
            "persons": [person | {"ssn": SSN}],
            "narrative": "burglary at Lake Pkwy market",
        },
    }


def write_agreements(region: Region, agreements: list[dict]) -> None:
    path = region.settings.agreements_dir / "test.yaml"
    path.write_text(yaml.safe_dump({"agreements": agreements}))


def by_ssn(region: Region, agency: str) -> list[Hit]:
    """What the agency's own audited search finds by the SSN (in clear or by blind index)."""
    request = SearchRequest(agency, "tester", "case 1", Criteria(identifier=SSN))
    return run_search(region.settings, request)


@pytest.mark.broker
def test_a_seal_with_a_lower_version_still_removes_the_record(
    region: Region, tmp_path: Path
) -> None:
    """Issue 11 case 5: the partner holds version 5; the owner seals with version 3."""
    local, county = region.local, region.county
    write_agreements(
        region,
        [
            {
                "id": "rms-to-county",
                "version": 1,
                "owner": local,
                "partners": [county],
                "kinds": ["rms.record"],
            }
        ],
    )
    with running_stages(region, tmp_path / "logs", [county]):
        publish_source(region, Kind.RMS_RECORD, [report(local, "R-SEAL", 5)])
        wait_for(lambda: by_ssn(region, county), 60, "the county to hold version 5")
        publish_source(region, Kind.RMS_RECORD, [report(local, "R-SEAL", 3, ["sealed"])])
        wait_for(lambda: not by_ssn(region, county), 60, "the sealed record to leave the index")
    found = mutualaid_cli(
        region, "search", "--agency", county, "--id", SSN, "--reason", "case 1", "--json"
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout == ""
