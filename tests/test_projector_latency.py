"""A lone record is indexed as soon as it arrives, not held for a batch that is not coming."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bench.data import alpr_events
from bench.pipeline import encoded, publish
from consumers import projector
from consumers.projector import Projector
from mutualaid.agencies import load_registry
from mutualaid.policy import load_policy
from mutualaid.serde import Codecs, SchemaStore
from mutualaid.topics import Kind, share_topic, source_topic
from streams.router import Consumed, Router
from support.regions import Region


@pytest.mark.broker
def test_a_lone_share_is_indexed_and_committed_without_waiting_for_the_batch_timeout(
    region: Region, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch timeout this long would stop the step well past the deadline below.
    monkeypatch.setattr(projector, "POLL_SECONDS", 600.0)
    settings = region.settings
    registry = load_registry(settings.agencies_file)
    router = Router(
        load_policy(settings.agreements_dir, registry),
        Codecs(SchemaStore()),
        public_keys={},
        hash_key=None,
    )
    event = alpr_events(tmp_path, region.neighbour, 1)[0]
    topic = source_topic(region.neighbour, Kind.ALPR_READ)
    (value,) = encoded(SchemaStore(), Kind.ALPR_READ, topic, [event])
    to_local = share_topic(region.local, Kind.ALPR_READ)
    (share,) = [
        o for o in router.route(Consumed(topic, 0, 0, None, value), {}) if o.topic == to_local
    ]
    publish(settings.bootstrap_servers, to_local, [share.value], [share.key])

    stage = Projector(settings, region.local)
    stage.subscribe()
    changed: list[int] = []
    stepping = threading.Thread(target=lambda: changed.append(stage.step()), daemon=True)
    stepping.start()
    # The first step joins the group (a few seconds at the 6 s session timeout) and then has
    # the one record; waiting out the batch timeout instead would take ten minutes.
    stepping.join(60)
    assert not stepping.is_alive(), "the projector held a lone record for its batch timeout"
    assert changed == [1]
    assert stage.index.count() == 1
    committed = stage._consumer.committed(
        [tp for tp in stage._consumer.assignment() if tp.topic == to_local], timeout=10
    )
    assert sum(max(tp.offset, 0) for tp in committed) == 1
    stage._consumer.close()
    stage.index.close()
