"""``up`` and ``broker``: the embedded stack and the embedded broker."""

from __future__ import annotations

import argparse
import sys

from cli.common import stop_event
from mutualaid.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="run the whole embedded stack: broker, router, projectors")
    up.add_argument("--demo", action="store_true", help="generate and publish demo ALPR data")
    up.add_argument("--reads", type=int, default=5000, help="demo reads per agency")
    up.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop once the demo data is indexed (for scripts)",
    )
    up.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="tansu: the embedded broker (default, starts in ms); kafka: Apache Kafka itself "
        "(KRaft, from the jars deploy/kafka/pom.xml fetches; needs Java 17)",
    )
    up.set_defaults(handler=_up)

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu)")
    broker.add_argument("--port", type=int, help="default: broker_port setting (19092)")
    broker.set_defaults(handler=_broker)


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from cli.up import run_up

    return run_up(
        settings,
        demo=args.demo,
        reads=args.reads,
        exit_when_done=args.exit_when_done,
        broker_kind=args.broker,
    )


def _broker(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid.agencies import load_registry
    from mutualaid.broker import EmbeddedBroker
    from mutualaid.kafka import ensure_topics, wait_for_broker
    from mutualaid.topics import topics_for

    registry = load_registry(settings.agencies_file)
    broker = EmbeddedBroker(
        args.port or settings.broker_port, log=settings.data_dir / "logs" / "broker.log"
    )
    (settings.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    broker.start()  # BrokerError: main reports it
    try:
        created = ensure_topics(
            wait_for_broker(broker.bootstrap_servers),
            topics_for(registry.oris, settings.partitions, settings.retention),
            settings.replication_factor,
        )
        print(
            f"broker ready at {broker.bootstrap_servers} ({len(created)} topics created); "
            "Ctrl-C stops it",
            flush=True,
        )
        stop = stop_event()
        while not stop.wait(0.5):
            if not broker.running():
                print(
                    "mutualaid broker: the broker process exited; see var/logs/broker.log",
                    file=sys.stderr,
                )
                return 1
    finally:
        broker.stop()
    return 0
