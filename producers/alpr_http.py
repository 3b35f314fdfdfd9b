"""ALPR reads pushed by cameras over HTTP: ``POST /v1/reads`` with a per-camera bearer token.

``mutualaid connect alpr --agency ORI --listen HOST:PORT`` serves it. A camera is registered
with ``mutualaid camera add --agency ORI CAMERA_ID``, which prints its token once; the token
says which camera is speaking, so a camera can only publish reads as itself.

The body is one JSON read, a JSON array of reads, or NDJSON, in the layout of an NDJSON ALPR
mapping (``deploy/mappings/alpr/mutualaid-ndjson.yaml`` by default; the same parser as the file
connector). The answer comes only after the broker acknowledged every read of the request
(``202``); a camera that gets ``503`` or no answer sends the same reads again, which yields the
same record ids and event ids, so downstream ignores the copies. Reads that cannot be used go
to ``dlq.producers`` with the reason and ``http:<camera>:<request id>#<index>``, and the answer
lists them; the good ones in the same request are published.

Bodies are bounded by settings before any read is looked at (``ingest_max_body_bytes``,
``ingest_max_reads``: 413, nothing kept; ``ingest_max_depth``: 400, measured before the JSON
parser runs) and each read by ``ingest_max_fields`` and ``ingest_max_text``. Record ids are
``<camera>/<read id>`` (``producers.alpr.record_id``): no camera can overwrite another's reads.
"""

# No `from __future__ import annotations` here: FastAPI reads these annotations at run time.

import json
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from confluent_kafka import Producer
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from mutualaid import tokens
from mutualaid.deadletter import DeadLetters, Letter
from mutualaid.errors import MutualaidError
from mutualaid.events import record_key
from mutualaid.kafka import DeliveryFailed, DeliveryTracker, produce, producer_config
from mutualaid.metrics import EVENTS_IN, EVENTS_OUT, INGEST_REQUESTS
from mutualaid.serde import (
    SOURCE_EVENT,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import Kind, Stage, source_topic
from producers.alpr import AlprAdapter, AlprField, AlprMapping
from producers.contract import Rejected, SourceItem
from producers.jsonlimits import ReadLimits, check_depth, nesting_depth

# A camera waits for its answer; past this it gets 503 and sends again (the copies are harmless).
DELIVERY_TIMEOUT = 10.0


class TooLarge(MutualaidError):
    """A request past the size bounds: refused whole (413), the camera sends it in parts."""


class Rejection(BaseModel):
    index: int
    error_type: str
    reason: str


class Accepted(BaseModel):
    request_id: str
    camera_id: str
    accepted: int
    rejected: list[Rejection]


def split_reads(body: bytes, limits: ReadLimits, max_reads: int) -> list[bytes]:
    """The reads in a body: a JSON object, a JSON array of objects, or NDJSON (one per line).

    Each read comes back as its own JSON text, for the mapping's NDJSON parser. A body that is
    none of these raises Rejected; one of more than ``max_reads`` reads raises TooLarge, before
    any read is looked at.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("bad_encoding", f"byte {exc.start} is not UTF-8") from None
    # Parsed whole only within the depth bound; deeper, it can still be NDJSON whose lines are
    # each checked on their own (in ReadIngest._event).
    depth = nesting_depth(text)
    parsed, unusable = _NOT_JSON, "not JSON, a JSON array, or NDJSON"
    if depth <= limits.max_depth:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            pass
        except ValueError as exc:  # JSON, but e.g. an integer of more than 4,300 digits
            unusable = f"not usable JSON: {exc}"
    if parsed is not _NOT_JSON:
        reads = parsed if isinstance(parsed, list) else [parsed]
        _check_count(len(reads), max_reads)
        return [json.dumps(read).encode() for read in reads]
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        _check_count(len(lines), max_reads)
        return [line.encode() for line in lines]  # NDJSON; each line is checked on its own
    check_depth(text, limits.max_depth)
    raise Rejected("malformed_body", unusable)


_NOT_JSON = object()


def _check_count(count: int, max_reads: int) -> None:
    if count > max_reads:
        raise TooLarge(
            f"{count:,} reads in one request; at most {max_reads:,} are accepted: "
            "send them in smaller requests"
        )


class ReadIngest:
    """Turns one camera's request into events and dead letters, and publishes them."""

    def __init__(
        self,
        settings: Settings,
        ori: str,
        mapping: AlprMapping,
        delivery_timeout: float = DELIVERY_TIMEOUT,
    ) -> None:
        if mapping.format != "ndjson":
            raise ValueError(f"mapping {mapping.name!r} is {mapping.format}; HTTP needs ndjson")
        if AlprField.CAMERA_ID not in mapping.columns:
            raise ValueError(f"mapping {mapping.name!r} maps no camera_id column")
        self.ori = ori
        self.delivery_timeout = delivery_timeout
        self.topic = source_topic(ori, Kind.ALPR_READ)
        self.limits = ReadLimits.of(settings)
        self.max_reads = settings.ingest_max_reads
        self.adapter = AlprAdapter(mapping, b"", ori, self.limits)
        self._camera_column = mapping.columns[AlprField.CAMERA_ID]
        codecs = codecs_for(settings)
        self._encode = codecs.serializer(SOURCE_EVENT[Kind.ALPR_READ])
        self._dead_letters = DeadLetters(Letter, codecs, Stage.PRODUCERS)
        self._producer = Producer(producer_config(settings))
        self._lock = threading.Lock()
        self._events_in = EVENTS_IN.labels(stage="producers", kind=str(Kind.ALPR_READ))
        self._events_out = EVENTS_OUT.labels(stage="producers", kind=str(Kind.ALPR_READ))

    def publish(self, camera: tokens.Holder, body: bytes) -> Accepted:
        """Publish the request's reads; DeliveryFailed if the broker did not take them all,
        TooLarge (nothing published) if the request holds too many."""
        request_id = uuid.uuid4().hex[:12]
        where = f"http:{camera.name}:{request_id}"
        acks = DeliveryTracker()
        rejected: list[Rejection] = []
        try:
            reads = split_reads(body, self.limits, self.max_reads)
        except Rejected as whole:
            reads = []
            self._dead(acks, whole, f"{where}#body", body)
            rejected.append(Rejection(index=-1, error_type=whole.error_type, reason=whole.reason))
        with self._lock:  # one request's records leave together, in order
            for index, raw in enumerate(reads):
                self._events_in.inc()
                try:
                    event = self._event(camera, raw, index, where)
                except Rejected as why:
                    self._dead(acks, why, f"{where}#{index}", raw)
                    rejected.append(
                        Rejection(index=index, error_type=why.error_type, reason=why.reason)
                    )
                    continue
                value = self._encode(event, SerializationContext(self.topic))
                produce(self._producer, self.topic, record_key(event["envelope"]), value, acks)
            acks.wait(self._producer, timeout=self.delivery_timeout)
        accepted = len(reads) - len([r for r in rejected if r.index >= 0])
        self._events_out.inc(accepted)
        return Accepted(
            request_id=request_id, camera_id=camera.name, accepted=accepted, rejected=rejected
        )

    def close(self) -> None:
        """Give records of requests that got 503 a last chance, then let go of the broker."""
        with self._lock:
            self._producer.flush(self.delivery_timeout)
            self._producer.close()

    def _event(self, camera: tokens.Holder, raw: bytes, index: int, where: str) -> dict:
        """The event for one read, as the token's camera; Rejected if unusable."""
        check_depth(raw.decode(), self.limits.max_depth)  # an NDJSON line is checked here
        try:
            read = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise Rejected("malformed_row", f"not JSON: {exc.msg}") from None
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise Rejected("malformed_row", f"not usable JSON: {exc}") from None
        if not isinstance(read, dict):
            raise Rejected("malformed_row", f"expected a JSON object, got {type(read).__name__}")
        claimed = read.get(self._camera_column)
        if claimed not in (None, "", camera.name):
            raise Rejected(
                "camera_mismatch",
                f"read names camera {claimed!r} but the token is camera {camera.name!r}",
            )
        read[self._camera_column] = camera.name  # also feeds the derived record id
        event = self.adapter.to_event(SourceItem(json.dumps(read).encode(), index, None))
        event["envelope"]["source_position"] = f"{where}#{index}"
        event["body"]["camera_name"] = event["body"]["camera_name"] or camera.display_name
        return event

    def _dead(self, acks: DeliveryTracker, why: Rejected, position: str, raw: bytes) -> None:
        letter = self._dead_letters.rejected(
            why,
            source=f"http ingest ({self.adapter.source_system})",
            position=position,
            payload=raw,
            source_ori=self.ori,
            key=f"{self.ori}/http".encode(),
        )
        produce(self._producer, *letter, acks)


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is known to exceed ``limit`` bytes: from the declared length
    before reading anything, else (chunked uploads) as soon as that much has arrived."""
    declared = request.headers.get("content-length") or "0"
    if not declared.isdigit() or int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_ingest(settings: Settings, ingest: ReadIngest) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(ingest.close)

    app = FastAPI(title=f"mutualaid ALPR ingest for {ingest.ori}", docs_url=None, lifespan=lifespan)
    bearer = HTTPBearer(auto_error=False)

    def camera_of_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> tokens.Holder:
        found = tokens.find(
            settings.cameras_file, ingest.ori, credentials.credentials if credentials else None
        )
        if found is None:
            INGEST_REQUESTS.labels(outcome="unauthorized").inc()
            raise HTTPException(
                401, "a valid camera token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return found

    @app.post("/v1/reads", status_code=202, response_model=Accepted)
    async def reads(
        request: Request, camera: Annotated[tokens.Holder, Depends(camera_of_token)]
    ) -> Accepted:
        limit = settings.ingest_max_body_bytes
        body = await _bounded_body(request, limit)
        if body is None:
            INGEST_REQUESTS.labels(outcome="too_large").inc()
            raise HTTPException(413, f"at most {limit:,} bytes per request")
        try:
            result = await run_in_threadpool(ingest.publish, camera, body)
        except TooLarge as exc:
            INGEST_REQUESTS.labels(outcome="too_large").inc()
            raise HTTPException(413, str(exc)) from None
        except DeliveryFailed as exc:
            INGEST_REQUESTS.labels(outcome="unavailable").inc()
            raise HTTPException(
                503, f"not published, send again: {exc}", headers={"Retry-After": "5"}
            ) from None
        if result.accepted == 0 and result.rejected:
            INGEST_REQUESTS.labels(outcome="bad_request").inc()
            raise HTTPException(400, result.model_dump())
        INGEST_REQUESTS.labels(outcome="accepted").inc()
        return result

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
