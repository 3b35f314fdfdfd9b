"""Pass-through baselines for the pipeline benchmark: the least a stage can do per record.

``python -m bench.passthrough faust|confluent BOOTSTRAP SOURCE DEST GROUP`` forwards every
record of SOURCE to DEST as raw bytes, the faust way (an agent with ``take_events``, as the
router's loop) or the librdkafka way (a consume -> produce loop), until SIGTERM. The pipeline
benchmark runs both against the same events as the router, so its figures are ratios taken in
one run on one machine.
"""

from __future__ import annotations

import signal
import sys
import tempfile

from confluent_kafka import Consumer, Producer


def confluent(bootstrap: str, source: str, dest: str, group: str) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 50,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "compression.type": "lz4"}
    )
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    consumer.subscribe([source])
    while not stopping:
        batch = consumer.consume(1000, 0.2)
        for msg in batch:
            if msg.error() is None:
                while True:
                    try:
                        producer.produce(dest, msg.value(), msg.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
        if batch:
            producer.flush(30)
            consumer.commit(asynchronous=False)
        producer.poll(0)
    consumer.close()


def faust_app(bootstrap: str, source: str, dest: str, group: str) -> None:
    import aiokafka
    import faust

    from mutualaid.kafka import FETCH_WAIT_MAX_MS

    # faust passes aiokafka fetch_max_wait_ms=1500 and has no setting for it; the embedded
    # broker holds every fetch that long, so the baseline gets the stages' own fetch wait.
    init = aiokafka.AIOKafkaConsumer.__init__

    def bounded(self: aiokafka.AIOKafkaConsumer, *args: object, **kwargs: object) -> None:
        init(self, *args, **{**kwargs, "fetch_max_wait_ms": FETCH_WAIT_MAX_MS})  # type: ignore[arg-type]

    aiokafka.AIOKafkaConsumer.__init__ = bounded  # type: ignore[method-assign]
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=6,
        datadir=tempfile.mkdtemp(prefix="bench-faust-"),
    )
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    src = app.topic(source, **raw)

    @app.agent(src, name="forward")
    async def forward(stream):  # type: ignore[no-untyped-def]
        async for batch in stream.take_events(500, within=0.05):
            for event in batch:
                await app.producer.send(dest, event.key, event.value, None, None, None)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    sys.argv = sys.argv[:1]  # faust's worker reads its own command line
    {"faust": faust_app, "confluent": confluent}[mode](*args)
