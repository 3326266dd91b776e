"""The ``keyrotd`` argument parser: every command, its options and their help.

``--config`` and ``--debug`` are accepted before and after the command; a usage error is a
:class:`UsageError` (exit 2, one line); a kid that starts with '-' is moved after ``--``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import NoReturn

from keyrotd import __version__
from keyrotd.errors import UsageError

_DASH_KID = r"-[A-Za-z0-9_-]{7,42}"
"""A kid (43 base64url characters) or a prefix of one (8 or more) that starts with '-', which
argparse takes for an option; :data:`_REVOKE_OPTIONS` are options all the same."""
_REVOKE_OPTIONS = frozenset({"--keyset", "--config", "--debug", "--help", "--version"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see `{self.prog} --help`")


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--config`` and ``--debug`` are accepted before and after the command."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--config", metavar="PATH", default=default, help="TOML configuration")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show tracebacks",
    )


KEYSET_HELP = "the keyset, by its name in the configuration (default: the first keyset)"
EXIT_CODES = (
    "exit codes: 0 success, 1 failure (inspect: an invalid token), 2 usage or configuration "
    "error, 3 inspect could not read the keys (URL or storage)"
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; with ``only`` (a command's name, the first argument of a run of
    it), that command's alone: what follows the name is parsed by its parser only, so a run needs
    none of the others (half of the parser's cost at start-up, docs/benchmarks.md)."""
    parser = _Parser(
        prog="keyrotd",
        description="Signing-key rotation daemon and operator tool.",
        epilog=EXIT_CODES,
    )
    parser.add_argument(
        "--version", action="version", version=f"keyrotd {__version__}", help="print the version"
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (help_text, add_arguments) in COMMANDS.items():
        if only is None or only == name:
            p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES)
            _common(p, top=False)
            add_arguments(p)
    return parser


def _keyset(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    p.add_argument("--keyset", metavar="N", help=KEYSET_HELP)


def _run(p: argparse.ArgumentParser) -> None:
    """``run`` takes only ``--config`` and ``--debug``."""


def _status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keyset", metavar="N", help="one keyset (default: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _rotate(p: argparse.ArgumentParser) -> None:
    _keyset(p)
    p.add_argument("--now", action="store_true", help="emergency: the successor signs at once")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --now: even a successor verifiers may not hold yet, or a brand-new key",
    )


def _revoke(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "kid",
        metavar="KID",
        help="the kid of the key to revoke, or its first 8 or more characters (see `keyrotd "
        "status`)",
    )
    p.add_argument("--keyset", metavar="N", help="the keyset holding KID (default: search all)")


def _backup(p: argparse.ArgumentParser) -> None:
    _keyset(p)
    p.add_argument(
        "--output", metavar="F", help="write the backup to file F (mode 0600); default: stdout"
    )


def _restore(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a file written by `keyrotd backup`")
    p.add_argument("--keyset", metavar="N", help="the keyset (default: the backup's own)")


def _inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "token",
        nargs="?",
        default="-",
        metavar="TOKEN|-",
        help="the token, or a file holding it (a leading 'Authorization: Bearer ' or 'Bearer ' "
        "is ignored); - or nothing: read it from stdin",
    )
    where = p.add_mutually_exclusive_group()
    _keyset(where)
    where.add_argument(
        "--jwks-url",
        metavar="URL",
        help="judge by the JWKS at this http(s) URL instead of storage (no history: revoked and "
        "expired keys look unknown; clock skew 5m unless --clock-skew)",
    )
    p.add_argument(
        "--clock-skew",
        metavar="DURATION",
        help="leeway for exp, nbf and iat, e.g. 30s or 2m (default: the keyset's clock_skew; "
        "5m with --jwks-url)",
    )
    p.add_argument("--audience", metavar="A", help="require A in the token's aud claim")
    p.add_argument("--issuer", metavar="I", help="require the token's iss claim to be I")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _check_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--example",
        action="store_true",
        help="print the commented example configuration (every setting) instead",
    )


def _client(p: argparse.ArgumentParser) -> None:
    from keyrotd.cli.admin_client_commands import add_client_parser  # scoped admin clients

    add_client_parser(p, _common)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run the daemon: scheduled rotation and the JWKS over HTTP", _run),
    "status": ("keys, states, timestamps and the next transition", _status),
    "rotate": ("bring the next rotation forward", _rotate),
    "revoke": ("drop a key from the JWKS at once", _revoke),
    "sign": ("print a token signed by the active key", lambda p: add_sign_parser(p, KEYSET_HELP)),
    "import": ("adopt an existing key (PEM or JWK)", lambda p: add_import_parser(p, KEYSET_HELP)),
    "backup": ("write the keyset's document, sealed, with its revision", _backup),
    "restore": ("bring a backup's keys back, never a revoked one", _restore),
    "jwks": ("print the JWKS that is served", _keyset),
    "signing-key": ("print the active private JWK (for issuers)", _keyset),
    "inspect": ("explain why a token is or is not valid", _inspect),
    "check-config": ("validate the configuration and the policy", _check_config),
    "client": ("manage the scoped admin clients", _client),
}
"""Each command in the order ``--help`` lists them: its help line and what adds its arguments."""


def kid_after_double_dash(argv: list[str]) -> list[str]:
    """``revoke -AbC…`` as ``revoke -- -AbC…``: one kid in 64 starts with '-' (RFC 7638 base64url).

    KID is the only positional of ``revoke``, so it moves after a ``--`` at the end, where
    argparse reads it as the positional whatever options surround it.
    """
    if "revoke" not in argv or "--" in argv:
        return argv
    after = argv[argv.index("revoke") + 1 :]
    kids = [arg for arg in after if re.fullmatch(_DASH_KID, arg) and arg not in _REVOKE_OPTIONS]
    if len(kids) != 1:
        return argv
    rest = list(argv)
    rest.remove(kids[0])
    return [*rest, "--", kids[0]]


def add_sign_parser(parser: argparse.ArgumentParser, keyset_help: str) -> None:
    parser.add_argument(
        "claims",
        nargs="?",
        default="-",
        metavar="CLAIMS|-",
        help='the claims as a JSON object, e.g. \'{"sub": "alice"}\'; - or nothing: read stdin',
    )
    parser.add_argument("--keyset", metavar="N", help=keyset_help)
    parser.add_argument(
        "--lifetime",
        metavar="S",
        help="seconds (or 90s, 15m, 1h) until the token expires; default and most: the keyset's "
        "token_lifetime",
    )


def add_import_parser(parser: argparse.ArgumentParser, keyset_help: str) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="the key: PEM (private or public) or a JWK as JSON"
    )
    parser.add_argument("--keyset", metavar="N", help=keyset_help)
    parser.add_argument(
        "--as",
        dest="as_state",
        choices=("active", "retired"),
        default="active",
        help="active (default): it signs at once, the active key retires; retired: published "
        "for verification until --until, never signs (a public key will do)",
    )
    parser.add_argument(
        "--until",
        metavar="T",
        help="with --as retired (required there): when it leaves the JWKS, RFC 3339 "
        "(2026-12-31T00:00:00Z) or a duration from now (30d)",
    )
