"""The one place a Kafka client's connection settings come from: ``bootstrap_servers`` and the
``kafka:`` map of librdkafka properties (TLS, SASL), given to every confluent-kafka client as
they are (every stage is one: any property librdkafka takes works).

    kafka:
      security.protocol: SASL_SSL
      sasl.mechanism: SCRAM-SHA-512
      sasl.username: router
      sasl.password: ...
      ssl.ca.location: /etc/mutualaid/tls/ca.pem

or, for mTLS, ``security.protocol: SSL`` with ``ssl.certificate.location`` and
``ssl.key.location`` (PEM files, as ``mutualaid certs`` writes them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mutualaid.settings import Settings

Properties = dict[str, str | int | bool]

# What mutualaid decides itself: delivery guarantees and offsets (mutualaid.kafka), group ids
# (one per stage), and the address (its own setting, so there is one place to change it).
OWN = {
    "bootstrap.servers": "set bootstrap_servers instead",
    "metadata.broker.list": "set bootstrap_servers instead",
    "group.id": "each stage names its own consumer group; remove it",
    "enable.idempotence": "mutualaid's producers are always idempotent; remove it",
    "acks": "mutualaid's producers always wait for all in-sync replicas; remove it",
    "enable.auto.commit": "stages commit offsets only after their output is durable; remove it",
    "enable.auto.offset.store": "stages store offsets themselves; remove it",
}
_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_-]+)*")
# Secret values: passwords, client secrets, and a private key given inline.
_SECRET = re.compile(r"password|secret|ssl\.key\.pem|sasl\.jaas\.config")
REDACTED = "<redacted>"

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def check_properties(values: Mapping[str, str | int | bool]) -> Properties:
    """The ``kafka`` setting, or ValueError saying which property is wrong and what to do."""
    for name, value in values.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r}: not a librdkafka property name (e.g. security.protocol)")
        if name in OWN:
            raise ValueError(f"{name!r} is set by mutualaid: {OWN[name]}")
        if name == "security.protocol" and str(value).upper() not in PROTOCOLS:
            raise ValueError(f"security.protocol {value!r}: expected one of {', '.join(PROTOCOLS)}")
    return dict(values)


def redacted(values: Mapping[str, str | int | bool]) -> Properties:
    return {k: REDACTED if _SECRET.search(k) else v for k, v in values.items()}


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The base of every confluent-kafka client's configuration (producer, consumer, admin)."""
    return {"bootstrap.servers": settings.bootstrap_servers, **settings.kafka, **overrides}
