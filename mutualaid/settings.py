"""One settings model for every process: defaults, then a YAML file, then MUTUALAID_* variables.

The defaults run the embedded stack from a clone's root. Pointing ``bootstrap_servers`` at a
real Kafka cluster (and ``schema_registry_url`` at a registry) is all production changes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mutualaid import kafkaclients, labels
from mutualaid.configfile import ConfigError, Problem, problems_from, read_yaml
from mutualaid.topics import ONE_YEAR_DAYS, Retention

ENV_PREFIX = "MUTUALAID_"
CONFIG_ENV = "MUTUALAID_CONFIG"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    # repr=False: the map carries passwords (sasl.password, ssl.key.password); log
    # ``kafka_redacted`` instead.
    kafka: dict[str, str | int | bool] = Field(
        {},
        repr=False,
        description="librdkafka client properties for every Kafka client (security.protocol, "
        "sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, "
        "ssl.certificate.location, ssl.key.location, ...), as librdkafka takes them",
    )
    schema_registry_url: str | None = Field(
        None,
        description="Confluent-compatible schema registry URL; unset means Avro single-object "
        "encoding against the schemas in avro/",
    )
    broker_port: int = Field(19092, ge=1, le=65535, description="port of the embedded broker")
    partitions: int = Field(4, ge=1, le=256, description="partitions per topic created")
    replication_factor: int = Field(
        1, ge=1, le=7, description="copies of each topic; 3 in production"
    )
    session_timeout_ms: int = Field(
        6000, ge=1000, description="consumer group session timeout; a first join waits ~half"
    )
    data_dir: Path = Field(Path("var"), description="where checkpoints and indexes are kept")
    index_url: str | None = Field(
        None,
        description="where agencies keep their search indexes: unset, one SQLite file each under "
        "<data_dir>/index/; postgresql://user@host:5432/db, one schema each on that server",
    )
    index_keep_encrypted: bool = Field(
        False,
        description="keep the fields partners encrypt sealed in the search index (opened only "
        "by an audited `search --reveal`); encrypt_indexed fields are then found by their keyed "
        "hash, which needs hash_key_file. Changing it empties and rebuilds the indexes",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "warning",
        description="what the router, matcher and projector log: warning and error only, or "
        "also info (partitions assigned, tables read back, batches indexed) or debug",
    )
    share_sealing: Literal["off", "keyed", "required"] = Field(
        "keyed",
        description="seal each record on a share topic whole to its partner's key (see Sealed "
        "share topics): keyed, to every partner with a public key (others get clear copies, "
        "named in a warning at start); required, the router refuses to start while a partner "
        "has no key; off, never",
    )
    seal_key_rotation_seconds: int = Field(
        3600,
        ge=1,
        description="how long the router seals to a partner under one data key before making "
        "and wrapping a new one (sooner if the partner's public key changes)",
    )
    agencies_file: Path = Field(Path("deploy/agencies.yaml"), description="the agency registry")
    agreements_dir: Path = Field(Path("deploy/agreements"), description="sharing agreements")
    rules_dir: Path = Field(
        Path("deploy/rules"), description="rules no agreement can override (law, region policy)"
    )
    extra_labels: list[str] = Field(
        [], description="labels to add to the built-in vocabulary, e.g. [gang_intel]"
    )
    protected_labels: list[str] | None = Field(
        None,
        description="labels denied unless an agreement allows them by name; default juvenile, "
        "sealed, expunged, informant (sealed and expunged are always protected)",
    )
    public_keys_dir: Path = Field(
        None,
        description="partners' public keys (<ori>.<key id>.pub); default <data_dir>/keys/public",
    )
    private_keys_dir: Path = Field(
        None, description="this site's private keys, never shared; default <data_dir>/keys/private"
    )
    hash_key_file: Path = Field(
        None, description="secret for keyed hashes; default <data_dir>/keys/hash.key"
    )
    api_users_file: Path = Field(
        None, description="search API users and token hashes; default <data_dir>/api-users.json"
    )
    cameras_file: Path = Field(
        None,
        description="cameras allowed to push reads and their token hashes; "
        "default <data_dir>/cameras.json",
    )
    api_port: int = Field(8600, ge=1, le=65535, description="port of `mutualaid api`")
    # Bounds on what cameras may send (`connect alpr --listen`); the last three also bound each
    # line of an ALPR export file. Past them a request gets 413 or 400 with the reason.
    ingest_max_body_bytes: int = Field(
        1_000_000, ge=1_000, le=8_000_000, description="bytes of one POST /v1/reads request"
    )
    ingest_max_reads: int = Field(
        1_000, ge=1, le=100_000, description="reads in one request (a JSON array or NDJSON)"
    )
    ingest_max_depth: int = Field(
        8, ge=2, le=64, description="JSON nesting levels of a request or an NDJSON line"
    )
    ingest_max_fields: int = Field(100, ge=16, le=10_000, description="fields of one JSON read")
    ingest_max_text: int = Field(
        2048, ge=64, le=65_536, description="characters of one field of a read"
    )
    router_id: str = Field(
        "mutualaid-router",
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="the router's consumer group and table prefix; one per independent router",
    )
    router_store: str | None = Field(
        None,
        description="no longer used (accepted so that older config files still load): the "
        "router's and the matcher's tables are kept in memory and read back from their "
        "changelogs when a partition is assigned",
    )
    matcher_id: str = Field(
        "mutualaid-matcher",
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="the hit matcher's consumer group and table prefix",
    )
    alert_repeat_seconds: int = Field(
        600,
        ge=0,
        description="a hit on the same plate and entry for the same center within this many "
        "seconds is suppressed; 0 alerts on every read",
    )
    alert_misreads: bool = Field(
        True,
        description="also alert, flagged MISREAD, when a read equals an entry only after folding "
        "look-alike characters (O/0, I/1, B/8, S/5, Z/2)",
    )
    console_port: int = Field(8700, ge=1, le=65535, description="port of `mutualaid console`")
    console_users_file: Path = Field(
        None,
        description="dispatch console users, their agency and token hashes; "
        "default <data_dir>/console-users.json",
    )
    console_login_failures_per_user: int = Field(
        5, ge=1, description="failed console logins per user name within the window before 429"
    )
    console_login_failures_per_address: int = Field(
        20, ge=1, description="failed console logins per client address within the window"
    )
    console_login_window_seconds: float = Field(
        300, gt=0, le=86_400, description="how long a failed console login counts"
    )
    webhooks_file: Path | None = Field(
        None,
        description="per-agency webhook endpoints for CAD integration (YAML); unset: none",
    )
    webhooks_allow_http_loopback: bool = Field(
        False,
        description="let webhook URLs be http:// to this host (127.0.0.1, ::1, localhost), "
        "for tests; https:// is required otherwise",
    )
    metrics_port: int = Field(
        9400, ge=0, le=65535, description="first Prometheus port; 0 turns metrics off"
    )
    audit_retention_days: int = Field(
        ONE_YEAR_DAYS,
        ge=1,
        description="days the broker keeps audit.* records (set on the topics); CJIS asks for "
        "at least a year",
    )
    audit_signing: bool = Field(
        True,
        description="sign and chain every audit record a stage writes (its key: mutualaid "
        "keys stage); false writes them unsigned, and audit verify calls them forged",
    )
    audit_instance: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="this worker's name in the audit chains (writer <stage>@<instance>); "
        "unset: an id made on first start and kept in data_dir",
    )
    dead_letter_retention_days: int = Field(
        ONE_YEAR_DAYS, ge=1, description="days the broker keeps dlq.* records"
    )

    @property
    def retention(self) -> Retention:
        return Retention(self.audit_retention_days, self.dead_letter_retention_days)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value  # INFO as logging spells it

    @field_validator("index_url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "expected a PostgreSQL URL such as postgresql://mutualaid@db.example:5432/search "
                "(unset it to keep one SQLite file per agency)"
            )
        try:
            if url.port == 0:  # .port raises ValueError for text or out of range
                raise ValueError
        except ValueError:
            raise ValueError("its port must be a number from 1 to 65535") from None
        return value

    @field_validator("kafka")
    @classmethod
    def _kafka_properties(cls, values: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        return kafkaclients.check_properties(values)

    @property
    def kafka_redacted(self) -> dict[str, str | int | bool]:
        """The ``kafka`` map as it may be logged: secret values replaced."""
        return kafkaclients.redacted(self.kafka)

    @field_validator("extra_labels")
    @classmethod
    def _label_names(cls, values: list[str]) -> list[str]:
        out = sorted({labels.normalise(v) for v in values})
        for name in out:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"{name!r}: a label is letters, digits and _, e.g. gang_intel")
        return out

    @model_validator(mode="after")
    def _protected_known(self) -> Settings:
        if self.protected_labels is not None:
            labels.check_all(self.protected_labels, self.label_vocabulary)
        return self

    @property
    def label_vocabulary(self) -> frozenset[str]:
        return labels.VOCABULARY | frozenset(self.extra_labels)

    @property
    def protected(self) -> frozenset[str]:
        if self.protected_labels is None:
            return labels.PROTECTED
        return frozenset(labels.check_all(self.protected_labels, self.label_vocabulary))

    @model_validator(mode="before")
    @classmethod
    def _keys_under_data_dir(cls, values: Any) -> Any:
        if isinstance(values, dict):
            keys = Path(values.get("data_dir") or "var") / "keys"
            values.setdefault("public_keys_dir", keys / "public")
            values.setdefault("private_keys_dir", keys / "private")
            values.setdefault("hash_key_file", keys / "hash.key")
            values.setdefault("api_users_file", keys.parent / "api-users.json")
            values.setdefault("console_users_file", keys.parent / "console-users.json")
            values.setdefault("cameras_file", keys.parent / "cameras.json")
        return values

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file is passed as init values; the environment must still win over it.
        return env_settings, init_settings


def load_settings(path: Path | None = None) -> Settings:
    """Settings from ``path`` (or $MUTUALAID_CONFIG, if set) and the environment.

    Raises ConfigError naming the file (or variable), line and field of every bad value.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    data, lines = read_yaml(path) if path is not None else ({}, {})
    if data is None:
        data = {}
    source = path or Path("(environment)")
    if not isinstance(data, dict):
        raise ConfigError(
            [
                Problem(
                    source,
                    1,
                    "",
                    "expected a mapping of settings",
                    "write one `name: value` per line",
                )
            ]
        )
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = problems_from(exc, Settings, source, lines)
        raise ConfigError([_name_env_var(_no_secrets(p), data) for p in problems]) from None


def _no_secrets(problem: Problem) -> Problem:
    """A bad ``kafka`` map is reported without its values: they hold passwords."""
    if problem.field.split(".")[0].split("[")[0] != "kafka":
        return problem
    _, _, why = problem.message.rpartition(" is not allowed: ")
    message = f"is not allowed: {why}" if why else "is not allowed"
    return Problem(problem.file, problem.line, problem.field, message, problem.fix)


def _name_env_var(problem: Problem, file_data: dict) -> Problem:
    """A bad value that came from the environment should name the variable, not the file."""
    var = ENV_PREFIX + problem.field.upper()
    if problem.field in file_data or var not in os.environ:
        return problem
    return Problem(Path(f"${var}"), None, problem.field, problem.message, problem.fix)
