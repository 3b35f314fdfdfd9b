"""Full recall in the router, without a broker: what a recheck decides again, what it re-sends,
and when time alone schedules one (an injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from test_router import AT, STORE, consumed, summary, version_of

from mutualaid.agencies import load_registry
from mutualaid.policy import Policy, load_policy
from mutualaid.serde import Codecs
from streams.router import Consumed, Router

TOPIC = "src.nv0990300.rms.record"
REGISTRY = load_registry(Path("deploy/agencies.yaml"))
KEY = "rms.record/NV0990300/r1"


def agreement(fields: str = "", tier: str = "full") -> str:
    return (
        "agreements:\n"
        "  - id: desert-to-county\n"
        "    version: 1\n"
        "    owner: NV0990300\n"
        "    partners: [CA0990200]\n"
        "    kinds: [rms.record]\n"
        f"    tier: {tier}\n" + (f"    fields: {{{fields}}}\n" if fields else "")
    )


def policy(tmp_path: Path, text: str) -> Policy:
    (tmp_path / "a.yaml").write_text(text)
    return load_policy(tmp_path, REGISTRY)


def shared_once(tmp_path: Path, now: list[datetime]) -> tuple[Router, dict, dict]:
    """A router that shared version 1 of a report with the county, the source it reads back,
    and its holders."""
    source: dict = {}
    router = Router(
        policy(tmp_path, agreement()),
        Codecs(STORE),
        public_keys={},
        hash_key=None,
        clock=lambda: now[0],
        read_source=lambda *position: source.get(position),
    )
    first = version_of("NV0990300", "rms.record", "UPSERT", 1, [])
    source[(TOPIC, 2, 17)] = first
    holders: dict = {}
    router.route(consumed(TOPIC, first), holders)
    return router, holders, source


def recheck(router: Router, holders: dict) -> list:
    outputs = []
    for control in router.rechecks(holders):
        outputs += router.route(Consumed(control.topic, 2, 0, control.key, control.value), holders)
    return outputs


def test_a_tightened_field_action_resends_the_copy_at_a_higher_revision(tmp_path: Path) -> None:
    now = [AT]
    router, holders, _ = shared_once(tmp_path, now)
    revision = holders["rms.record/NV0990300/r1"]["revision"]
    router.use_policy(policy(tmp_path, agreement("'persons[].ssn': drop")))
    outputs = recheck(router, holders)
    assert summary(outputs) == [
        ("share.ca0990200.rms.record", "UPSERT"),
        ("audit.dissemination", "CA0990200 SHARED"),
    ]
    assert holders["rms.record/NV0990300/r1"]["revision"] == revision + 1
    # Decided again under the same agreements: nothing to recheck, nothing re-sent.
    assert router.rechecks(holders) == []
    router.use_policy(policy(tmp_path, agreement("'persons[].ssn': drop")))
    assert router.rechecks(holders) == []


def test_an_edit_that_changes_no_copy_sends_nothing(tmp_path: Path) -> None:
    router, holders, _ = shared_once(tmp_path, [AT])
    edited = agreement().replace("version: 1", "version: 2")
    router.use_policy(policy(tmp_path, edited))
    assert len(router.rechecks(holders)) == 1  # decided under other agreements: recheck it
    assert recheck(router, holders) == []  # every copy is as it would be now
    assert router.rechecks(holders) == []  # and the entry says it was checked under these


def test_a_source_event_that_cannot_be_read_back_is_withdrawn(tmp_path: Path) -> None:
    router, holders, source = shared_once(tmp_path, [AT])
    source.clear()  # past the source topic's retention
    router.use_policy(policy(tmp_path, agreement("'persons[].ssn': drop")))
    assert summary(recheck(router, holders)) == [
        ("share.ca0990200.rms.record", "DELETE"),
        ("share.ca0990200.rms.record", "tombstone"),
        ("audit.dissemination", "CA0990200 WITHDRAWN"),
    ]
    assert holders == {}


def test_time_alone_schedules_a_recheck_of_every_held_record(tmp_path: Path) -> None:
    expiry = AT + timedelta(days=1)

    class Expiring(Policy):
        """As the policy's assurances will: a decision may change when one expires."""

        def next_change(self, now: datetime) -> datetime | None:
            return expiry if now < expiry else None

    now = [AT]
    router, holders, _ = shared_once(tmp_path, now)
    router.use_policy(Expiring(router.policy.agreements, REGISTRY))
    assert router.due_rechecks(holders) == []
    now[0] = expiry - timedelta(seconds=1)
    assert router.due_rechecks(holders) == []
    now[0] = expiry
    (control,) = router.due_rechecks(holders)
    assert control.key == b"rms.record/NV0990300/r1"
    assert router.due_rechecks(holders) == []  # once: the next moment is None


def test_the_holders_entry_follows_the_retention_of_the_copies_resent(
    tmp_path: Path,
) -> None:
    def kept_for(days: int) -> str:
        return agreement() + f"    retention_days: {days}\n"

    def held_until() -> datetime:
        return datetime.fromtimestamp(holders[KEY]["held_until"] / 1000, UTC)

    router, holders, _ = shared_once(tmp_path, [AT])
    assert "held_until" not in holders[KEY]  # shared without limit
    router.use_policy(policy(tmp_path, kept_for(30)))
    assert summary(recheck(router, holders))[-1] == ("audit.dissemination", "CA0990200 SHARED")
    assert held_until() == AT + timedelta(days=30)
    router.use_policy(policy(tmp_path, kept_for(365)))
    recheck(router, holders)
    assert held_until() == AT + timedelta(days=365)
    # Shortened again: the copy re-sent replaces the partner's, and the entry follows it.
    router.use_policy(policy(tmp_path, kept_for(30)))
    recheck(router, holders)
    assert held_until() == AT + timedelta(days=30)
    # Without limit: kept for good.
    router.use_policy(policy(tmp_path, agreement()))
    recheck(router, holders)
    assert "held_until" not in holders[KEY]
