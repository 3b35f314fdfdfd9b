"""`<holder> add|remove`: the bearer tokens of API users, dispatchers and cameras."""

from __future__ import annotations

import argparse

from cli.common import agency
from mutualaid.settings import Settings


def token_commands(
    sub: argparse._SubParsersAction,
    name: str,
    text: str,
    file_setting: str,
    holder: str,
    holder_help: str,
    *,
    positional: bool = False,
    display_name: str | None = None,
    grants: dict[str, str] | None = None,
) -> None:
    """`<name> add|remove`: bearer tokens for API users, dispatchers or cameras.

    ``display_name``, if given, is the help of an `add --name` option stored with the token;
    each of ``grants`` (grant: help) an `add --may-<grant>` flag.
    """
    group = sub.add_parser(name, help=text)
    actions = group.add_subparsers(required=True, metavar="action")
    for action, help_text, handler in (
        ("add", "issue a token (shown once; only its SHA-256 is kept)", _token_add),
        ("remove", "revoke every token it has", _token_remove),
    ):
        command = actions.add_parser(action, help=help_text)
        command.add_argument("--agency", required=True, help="ORI of its agency")
        if positional:
            command.add_argument("holder", metavar=holder.upper(), help=holder_help)
        else:
            command.add_argument(f"--{holder}", dest="holder", required=True, help=holder_help)
        if display_name and action == "add":
            command.add_argument("--name", dest="display_name", help=display_name)
        for grant, grant_help in (grants or {}).items() if action == "add" else ():
            command.add_argument(
                f"--may-{grant}", dest="grants", action="append_const", const=grant, help=grant_help
            )
        command.set_defaults(handler=handler, tokens_file=file_setting, holder_kind=holder)


def _token_add(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid import tokens

    ori = agency(settings, args.agency)
    token = tokens.issue(
        getattr(settings, args.tokens_file),
        ori,
        args.holder,
        getattr(args, "display_name", None),
        frozenset(getattr(args, "grants", None) or ()),
    )
    print(f"token for {args.holder_kind} {args.holder} of {ori} (shown only now):\n{token}")
    return 0


def _token_remove(settings: Settings, args: argparse.Namespace) -> int:
    from mutualaid import tokens

    ori = agency(settings, args.agency)
    revoked = tokens.revoke(getattr(settings, args.tokens_file), ori, args.holder)
    print(f"revoked {revoked} token(s) of {args.holder_kind} {args.holder}")
    return 0 if revoked else 1
