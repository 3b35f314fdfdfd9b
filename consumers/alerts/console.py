"""The dispatch console: one agency's hit alerts, live in a browser, acknowledged by dispatchers.

``mutualaid console --agency ORI`` serves one dispatch center. Its state is the center's two
topics, read whole by a ``TopicFollower`` (no consumer group: every console process shows
everything): ``alerts.<ori>`` and ``alerts.<ori>.acks``. Acknowledging publishes to the acks
topic and waits for the broker, so every open console, in this process or another, shows the
acknowledgement when it comes back from the topic; the topic is the record of who acknowledged
what, when.

Dispatchers log in with a token from ``mutualaid console-user add``; a login opens a
server-side session held in an HttpOnly, SameSite=Strict cookie. Only users of this agency get
in, and the page renders every value as text (plates and notes are untrusted input).
"""

# No `from __future__ import annotations` here: FastAPI reads these annotations at run time.

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from confluent_kafka import Message, Producer
from fastapi import Cookie, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel

from consumers.sessions import Sessions, login_limits, page_with_login
from mutualaid.agencies import Agency, Registry
from mutualaid.kafka import (
    DeliveryFailed,
    DeliveryTracker,
    TopicFollower,
    produce,
    producer_config,
)
from mutualaid.metrics import ALERT_ACKS, CONSOLE_ALERTS, CONSOLE_CLIENTS
from mutualaid.serde import (
    ALERT_ACK,
    HIT_ALERT,
    DeserializationError,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import alert_acks_topic, alerts_topic

PAGE = Path(__file__).parent / "console.html"
KEEP_ALERTS = 500
HEARTBEAT_SECONDS = 15.0
SESSION_COOKIE = "mutualaid_console"
log = logging.getLogger("mutualaid.console")


def alert_view(hit: dict, agencies: dict[str, str]) -> dict:
    """What the page shows of one alert, as JSON-ready values."""
    read, entry = hit["read"], hit["entry"]
    lat, lon = read.get("latitude"), read.get("longitude")
    return {
        "alert_id": hit["alert_id"],
        "plate": entry.get("plate") or read.get("plate"),
        "read_plate": read.get("plate"),
        "state": read.get("plate_state") or entry.get("plate_state"),
        "reason": entry.get("reason"),
        "match": hit["match"],
        "entry_id": hit["entry_id"],
        "entry_owner": agencies.get(hit["entry_owner_ori"], hit["entry_owner_ori"]),
        "source_agency": agencies.get(hit["read_source_ori"], hit["read_source_ori"]),
        "camera": read.get("camera_name") or read.get("camera_id"),
        "latitude": lat,
        "longitude": lon,
        "map": (
            f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"
            if lat is not None and lon is not None
            else None
        ),
        "vehicle": " ".join(
            str(v)
            for v in (
                read.get("vehicle_color"),
                read.get("vehicle_make"),
                read.get("vehicle_model"),
            )
            if v
        ),
        "caution": entry.get("caution"),
        "notes": entry.get("notes"),
        "read_at": hit["read_occurred_at"].isoformat(),
        "withheld": hit["withheld_fields"],
        "ack": None,
    }


class AlertBoard:
    """The newest alerts and their acknowledgements, and the live streams that want them.

    Fed from the follower's thread; streams live on the server's event loop, so updates cross
    over with ``call_soon_threadsafe``.
    """

    def __init__(self, center: str, agencies: dict[str, str], keep: int = KEEP_ALERTS) -> None:
        self.agencies = agencies
        self.keep = keep
        self.alerts: OrderedDict[str, dict] = OrderedDict()
        # Acks whose alert is not on the board: not read yet, or already dropped as too old.
        # Bounded like the board, or acks of long-gone alerts would pile up for ever.
        self._early_acks: OrderedDict[str, dict] = OrderedDict()
        self._shown = CONSOLE_ALERTS.labels(center=center)
        self._lock = threading.Lock()
        self._streams: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()

    def add_alert(self, hit: dict) -> None:
        view = alert_view(hit, self.agencies)
        with self._lock:
            if view["alert_id"] in self.alerts:
                return  # the same alert again (a matcher replay): already shown
            view["ack"] = self._early_acks.pop(view["alert_id"], None)
            self.alerts[view["alert_id"]] = view
            while len(self.alerts) > self.keep:
                self.alerts.popitem(last=False)
        self._shown.inc()
        self._publish("alert", view)

    def add_ack(self, ack: dict) -> None:
        record = {"user": ack["user"], "at": ack["acknowledged_at"].isoformat()}
        with self._lock:
            view = self.alerts.get(ack["alert_id"])
            if view is None:
                self._early_acks.setdefault(ack["alert_id"], record)
                while len(self._early_acks) > self.keep:
                    self._early_acks.popitem(last=False)
                return
            if view["ack"] is not None:
                return  # the first acknowledgement stands
            view["ack"] = record
        self._publish("ack", {"alert_id": ack["alert_id"], **record})

    def __contains__(self, alert_id: str) -> bool:
        with self._lock:
            return alert_id in self.alerts

    def snapshot(self) -> list[dict]:
        """Newest first."""
        with self._lock:
            return list(reversed(self.alerts.values()))

    def subscribe(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue]:
        stream: tuple[asyncio.AbstractEventLoop, asyncio.Queue] = (
            asyncio.get_running_loop(),
            asyncio.Queue(),
        )
        with self._lock:
            self._streams.add(stream)
        return stream

    def unsubscribe(self, stream: tuple[asyncio.AbstractEventLoop, asyncio.Queue]) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _publish(self, kind: str, data: dict) -> None:
        with self._lock:
            streams = list(self._streams)
        for loop, queue in streams:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, data))


def follow_alerts(settings: Settings, center: str, board: AlertBoard) -> TopicFollower:
    """A follower of the center's alerts and acks topics that feeds ``board``."""
    codecs = codecs_for(settings)
    hits_topic, acks_topic = alerts_topic(center), alert_acks_topic(center)
    decode_hit = codecs.deserializer(HIT_ALERT)
    decode_ack = codecs.deserializer(ALERT_ACK)

    def apply(msg: Message) -> None:
        ctx = SerializationContext.of(msg)
        is_hit = msg.topic() == hits_topic
        decode, add = (decode_hit, board.add_alert) if is_hit else (decode_ack, board.add_ack)
        try:
            record = decode(msg.value(), ctx)
        except DeserializationError as exc:
            # Skipped, not fatal: one bad record must not freeze the board. The webhook sender,
            # which reads in a consumer group, is the one that dead-letters it.
            log.error("skipped: %s", exc)
            return
        if record is not None:
            add(record)

    return TopicFollower(settings, [hits_topic, acks_topic], apply)


class Acknowledger:
    """Publishes acknowledgements and waits until the broker has them."""

    def __init__(self, settings: Settings, center: str) -> None:
        self.center = center
        self.topic = alert_acks_topic(center)
        self._encode = codecs_for(settings).serializer(ALERT_ACK)
        self._producer = Producer(producer_config(settings))
        self._lock = threading.Lock()

    def acknowledge(self, alert_id: str, user: str) -> None:
        record = {
            "alert_id": alert_id,
            "center_ori": self.center,
            "user": user,
            "acknowledged_at": datetime.now(UTC),
            "note": None,
        }
        value = self._encode(record, SerializationContext(self.topic))
        with self._lock:
            acks = DeliveryTracker()
            produce(self._producer, self.topic, alert_id.encode(), value, acks)
            acks.wait(self._producer, timeout=10)  # DeliveryFailed: not acknowledged
        ALERT_ACKS.labels(center=self.center).inc()


class Login(BaseModel):
    user: str
    token: str


def _event(kind: str, data: object) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def create_console(
    settings: Settings, agency: Agency, registry: Registry, board: AlertBoard
) -> FastAPI:
    app = FastAPI(title=f"mutualaid dispatch console: {agency.name}", docs_url=None)
    sessions = Sessions(settings.console_users_file, agency.ori, login_limits(settings), log)
    acknowledger = Acknowledger(settings, agency.ori)
    clients = CONSOLE_CLIENTS.labels(center=agency.ori)
    page = page_with_login(PAGE, agency, "Dispatcher login", "Log in")

    def dispatcher(session: str | None) -> str:
        holder = sessions.holder(session)
        if holder is None:
            raise HTTPException(401, "log in first")
        return holder.name

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/login")
    def login(credentials: Login, request: Request, response: Response) -> dict:
        who = f"a dispatcher of {agency.name}"
        sessions.login(credentials.user, credentials.token, request, response, SESSION_COOKIE, who)
        return {"user": credentials.user, "agency": agency.ori}

    @app.post("/logout")
    def logout(
        response: Response, mutualaid_console: Annotated[str | None, Cookie()] = None
    ) -> dict:
        sessions.close(mutualaid_console)
        response.delete_cookie(SESSION_COOKIE)
        return {}

    @app.get("/me")
    def me(mutualaid_console: Annotated[str | None, Cookie()] = None) -> dict:
        return {"user": dispatcher(mutualaid_console), "agency": agency.ori}

    @app.get("/events")
    async def events(mutualaid_console: Annotated[str | None, Cookie()] = None) -> Response:
        dispatcher(mutualaid_console)
        stream = board.subscribe()

        async def send():
            clients.inc()
            try:
                yield _event("snapshot", board.snapshot())
                while True:
                    try:
                        update = await asyncio.wait_for(stream[1].get(), HEARTBEAT_SECONDS)
                    except TimeoutError:
                        update = None
                    try:
                        dispatcher(mutualaid_console)
                    except HTTPException:
                        return  # logged out or revoked: the page asks for a login again
                    # A comment line when idle lets proxies and the browser see a live link.
                    yield ": still here\n\n" if update is None else _event(*update)
            finally:
                board.unsubscribe(stream)
                clients.dec()

        return StreamingResponse(
            send(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @app.post("/alerts/{alert_id}/ack")
    def acknowledge(
        alert_id: str, mutualaid_console: Annotated[str | None, Cookie()] = None
    ) -> dict:
        user = dispatcher(mutualaid_console)
        if alert_id not in board:
            raise HTTPException(404, "no such alert on this console")
        try:
            acknowledger.acknowledge(alert_id, user)
        except DeliveryFailed:
            raise HTTPException(
                503, "the broker did not confirm the acknowledgement; try again"
            ) from None
        return {"alert_id": alert_id, "user": user}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def run_console(
    settings: Settings, agency: Agency, registry: Registry, host: str, port: int
) -> None:
    import uvicorn

    board = AlertBoard(agency.ori, {a.ori: a.name for a in registry.agencies})
    follower = follow_alerts(settings, agency.ori, board)
    stop = threading.Event()
    threading.Thread(target=follower.run, args=(stop,), daemon=True, name="alerts").start()
    app = create_console(settings, agency, registry, board)
    try:
        # Live streams never end by themselves: do not wait long for them on shutdown.
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        stop.set()
