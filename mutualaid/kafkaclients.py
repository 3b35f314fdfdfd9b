"""The one place a Kafka client's connection settings come from: ``bootstrap_servers`` and the
``kafka:`` map of librdkafka properties (TLS, SASL), for confluent-kafka clients as they are,
and translated for faust (aiokafka) where aiokafka has an equivalent.

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
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mutualaid.errors import UsageError

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
# What faust's aiokafka driver can be given (faust.auth): anything else that bears on the
# connection stops the matcher at start rather than connecting without it.
FAUST_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_FAUST_UNSUPPORTED = (
    "ssl.keystore.location",
    "ssl.certificate.pem",
    "ssl.key.pem",
    "ssl.ca.pem",
    "sasl.oauthbearer.",
    "sasl.kerberos.",
)


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


class FaustSecurityError(UsageError, ValueError):
    """A ``kafka`` property the matcher (aiokafka) cannot honour."""


def ssl_context(props: Mapping[str, str | int | bool]) -> ssl.SSLContext:
    """A client TLS context from librdkafka's PEM properties, verifying the broker as librdkafka
    does (its hostname too, unless ssl.endpoint.identification.algorithm is none)."""
    ca = props.get("ssl.ca.location")
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if str(props.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    cert, key = props.get("ssl.certificate.location"), props.get("ssl.key.location")
    if cert or key:
        if not (cert and key):
            raise FaustSecurityError(
                "kafka: ssl.certificate.location and ssl.key.location go together (mTLS)"
            )
        password = props.get("ssl.key.password")
        context.load_cert_chain(str(cert), str(key), str(password) if password else None)
    return context


def faust_options(settings: Settings) -> dict[str, Any]:
    """faust.App keyword arguments for the ``kafka`` setting: ``broker_credentials`` with the
    protocol, SASL mechanism and login, and a TLS context built from the same PEM files."""
    from faust.auth import SASLCredentials, SSLCredentials

    props = settings.kafka
    for name in props:
        if any(name.startswith(p) for p in _FAUST_UNSUPPORTED):
            raise FaustSecurityError(
                f"kafka: {name} is not supported by the matcher (aiokafka); "
                "give PEM files with ssl.ca.location, ssl.certificate.location, ssl.key.location"
            )
    protocol = str(props.get("security.protocol", "PLAINTEXT")).upper()
    context = ssl_context(props) if protocol in ("SSL", "SASL_SSL") else None
    if protocol.startswith("SASL_"):
        mechanism = str(props.get("sasl.mechanism", props.get("sasl.mechanisms", "GSSAPI")))
        if mechanism.upper() not in FAUST_MECHANISMS:
            raise FaustSecurityError(
                f"kafka: sasl.mechanism {mechanism} is not supported by the matcher (aiokafka)"
                f"; use one of {', '.join(FAUST_MECHANISMS)}"
            )
        credentials = SASLCredentials(
            username=str(props.get("sasl.username", "")),
            password=str(props.get("sasl.password", "")),
            ssl_context=context,
            mechanism=mechanism.upper(),
        )
        return {"broker_credentials": credentials}
    if context is not None:
        return {"broker_credentials": SSLCredentials(context)}
    return {}
