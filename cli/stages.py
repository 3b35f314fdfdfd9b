"""The long-running stages after the connectors: ``router``, ``matcher``, ``project``, ``api``,
``console`` and ``webhooks``, with the tokens of the API's and the console's users."""

from __future__ import annotations

import argparse

from cli.common import agency, configure_logging, registry_and_policy, stop_event
from cli.tokens import token_commands
from mutualaid.errors import UsageError
from mutualaid.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    router = sub.add_parser("router", help="run the sharing router")
    router.set_defaults(handler=_router)

    matcher = sub.add_parser("matcher", help="match plate reads against hotlists")
    matcher.set_defaults(handler=_matcher)

    project = sub.add_parser("project", help="project an agency's share topics into its index")
    project.add_argument("--agency", required=True, help="ORI of the agency whose index to fill")
    project.set_defaults(handler=_project)

    api = sub.add_parser("api", help="serve the agency's search over HTTP (OpenAPI at /docs)")
    api.add_argument("--agency", required=True, help="ORI of the agency whose index to serve")
    api.add_argument("--port", type=int, help="default: api_port setting (8600)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    api.set_defaults(handler=_api)
    token_commands(
        sub, "api-user", "manage search API users", "api_users_file", "user",
        "who, as the audit should name them",
        grants={"reveal": "may open fields the index keeps encrypted (reveal=true; audited)"},
    )  # fmt: skip

    console = sub.add_parser("console", help="serve a dispatch center's live hit alerts")
    console.add_argument("--agency", required=True, help="ORI of the dispatch center")
    console.add_argument("--port", type=int, help="default: console_port setting (8700)")
    console.add_argument("--host", default="127.0.0.1", help="address to listen on")
    console.set_defaults(handler=_console)
    webhooks = sub.add_parser("webhooks", help="POST an agency's hit alerts to its CAD (signed)")
    webhooks.add_argument("--agency", required=True, help="ORI of the dispatch center")
    webhooks.set_defaults(handler=_webhooks)
    token_commands(
        sub, "console-user", "manage dispatch console users", "console_users_file", "user",
        "the dispatcher, as acknowledgements name them",
    )  # fmt: skip


def _router(settings: Settings, args: argparse.Namespace) -> int:
    from streams.app import run_router

    configure_logging(settings)
    registry, policy = registry_and_policy(settings)
    # MissingKey, KeyFileError: main reports them
    run_router(settings, registry, policy, stop_event())
    return 0


def _matcher(settings: Settings, args: argparse.Namespace) -> int:
    from streams.matcher_app import run_matcher

    configure_logging(settings)
    registry, policy = registry_and_policy(settings)
    run_matcher(settings, registry, policy, stop_event())
    return 0


def _project(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.projector import Projector
    from mutualaid.agencies import load_registry
    from mutualaid.kafka import wait_for_broker
    from mutualaid.metrics import serve_metrics

    configure_logging(settings)
    ori = load_registry(settings.agencies_file).get(args.agency).ori
    wait_for_broker(settings)
    serve_metrics(settings.metrics_port)
    projector = Projector(settings, ori)  # IndexUnavailable: main reports it
    print(f"projecting share.{ori.lower()}.* into its index; Ctrl-C stops", flush=True)
    projector.run(stop_event())
    return 0


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from consumers.index import open_index
    from consumers.search.api import create_api
    from mutualaid.agencies import load_registry
    from mutualaid.metrics import serve_metrics

    registry = load_registry(settings.agencies_file)
    agency = registry.get(args.agency)
    open_index(settings, agency.ori).close()  # fail at start-up, not at the first search
    app = create_api(settings, agency, registry)
    serve_metrics(settings.metrics_port)  # searches per agency
    uvicorn.run(app, host=args.host, port=args.port or settings.api_port, log_level="warning")
    return 0


def _console(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.alerts.console import run_console
    from mutualaid.agencies import load_registry
    from mutualaid.metrics import serve_metrics

    registry = load_registry(settings.agencies_file)
    agency = registry.get(args.agency)
    serve_metrics(settings.metrics_port)
    run_console(settings, agency, registry, args.host, args.port or settings.console_port)
    return 0


def _webhooks(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.alerts.webhooks import WebhookSender, load_endpoints
    from mutualaid.metrics import serve_metrics

    ori = agency(settings, args.agency)
    endpoints = load_endpoints(  # ConfigError: main reports it
        settings.webhooks_file, ori, allow_http_loopback=settings.webhooks_allow_http_loopback
    )
    if not endpoints:
        raise UsageError(
            f"webhooks: no endpoint for {ori} in webhooks_file "
            f"({settings.webhooks_file or 'not set'}); add one (see README)"
        )
    serve_metrics(settings.metrics_port)
    WebhookSender(settings, ori, endpoints).run(stop_event())
    return 0
