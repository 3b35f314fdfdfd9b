"""The router without a broker, as the policy tests drive it: the demo registry, agreement
files, events as it consumes them and its outputs decoded."""

from __future__ import annotations

from pathlib import Path

import yaml

from mutualaid.agencies import load_registry
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind, source_topic
from streams.router import Consumed, Output

STORE = SchemaStore()
REGISTRY = load_registry(Path("deploy/agencies.yaml"))


def write_agreements(folder: Path, files: dict[str, list[dict]]) -> Path:
    """One agreement file per name, in the order given (to show that order does not count)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, agreements in files.items():
        (folder / name).write_text(yaml.safe_dump({"agreements": agreements}))
    return folder


def consumed(event: dict) -> Consumed:
    """The event as the router consumes it from its owner's source topic."""
    kind = Kind(event["envelope"]["kind"])
    topic = source_topic(event["envelope"]["source_ori"], kind)
    value = AvroSerializer(STORE, SOURCE_EVENT[kind])(event, SerializationContext(topic))
    return Consumed(topic, 0, 0, None, value)


def decoded(outputs: list[Output]) -> tuple[dict[str, dict], dict[str, dict]]:
    """(shared event per partner ORI, audit record per partner ORI) of one route() call."""
    shares, audits = {}, {}
    for o in outputs:
        if o.topic == "audit.dissemination":
            audit = AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)(
                o.value, SerializationContext(o.topic)
            )
            audits[audit["partner_ori"]] = audit
        elif o.topic.startswith("share.") and o.value is not None:
            kind = Kind(o.topic.split(".", 2)[2])
            shared = AvroDeserializer(STORE, SHARED_EVENT[kind])(
                o.value, SerializationContext(o.topic)
            )
            shares[shared["disclosure"]["partner_ori"]] = shared
    return shares, audits
