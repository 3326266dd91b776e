"""The ``keyrotd`` argument parser: every command, its options and their help.

``--config`` and ``--debug`` are accepted before and after the command; a usage error is a
:class:`UsageError` (exit 2, one line); a kid that starts with '-' is moved after ``--``.
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

from keyrotd import __version__
from keyrotd.errors import UsageError

_DASH_KID = re.compile(r"-[A-Za-z0-9_-]{7,42}")
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


def build_parser() -> argparse.ArgumentParser:
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

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES)
        _common(p, top=False)
        return p

    def keyset(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
        p.add_argument("--keyset", metavar="N", help=KEYSET_HELP)

    command("run", "run the daemon: scheduled rotation and the JWKS over HTTP")
    p = command("status", "keys, states, timestamps and the next transition")
    p.add_argument("--keyset", metavar="N", help="one keyset (default: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("rotate", "bring the next rotation forward")
    keyset(p)
    p.add_argument("--now", action="store_true", help="emergency: the successor signs at once")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --now: even a successor verifiers may not hold yet, or a brand-new key",
    )
    p = command("revoke", "drop a key from the JWKS at once")
    p.add_argument(
        "kid",
        metavar="KID",
        help="the kid of the key to revoke, or its first 8 or more characters (see `keyrotd "
        "status`)",
    )
    p.add_argument("--keyset", metavar="N", help="the keyset holding KID (default: search all)")
    add_sign_parser(command("sign", "print a token signed by the active key"), KEYSET_HELP)
    add_import_parser(command("import", "adopt an existing key (PEM or JWK)"), KEYSET_HELP)
    p = command("backup", "write the keyset's document, sealed, with its revision")
    keyset(p)
    p.add_argument(
        "--output", metavar="F", help="write the backup to file F (mode 0600); default: stdout"
    )
    p = command("restore", "bring a backup's keys back, never a revoked one")
    p.add_argument("file", metavar="FILE", help="a file written by `keyrotd backup`")
    p.add_argument("--keyset", metavar="N", help="the keyset (default: the backup's own)")
    p = command("jwks", "print the JWKS that is served")
    keyset(p)
    p = command("signing-key", "print the active private JWK (for issuers)")
    keyset(p)
    p = command("inspect", "explain why a token is or is not valid")
    p.add_argument(
        "token",
        nargs="?",
        default="-",
        metavar="TOKEN|-",
        help="the token, or a file holding it (a leading 'Authorization: Bearer ' or 'Bearer ' "
        "is ignored); - or nothing: read it from stdin",
    )
    where = p.add_mutually_exclusive_group()
    keyset(where)
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
    p = command("check-config", "validate the configuration and the policy")
    p.add_argument(
        "--example",
        action="store_true",
        help="print the commented example configuration (every setting) instead",
    )
    from keyrotd.cli.admin_client_commands import add_client_parser  # scoped admin clients

    add_client_parser(command("client", "manage the scoped admin clients"), _common)
    return parser


def kid_after_double_dash(argv: list[str]) -> list[str]:
    """``revoke -AbC…`` as ``revoke -- -AbC…``: one kid in 64 starts with '-' (RFC 7638 base64url).

    KID is the only positional of ``revoke``, so it moves after a ``--`` at the end, where
    argparse reads it as the positional whatever options surround it.
    """
    if "revoke" not in argv or "--" in argv:
        return argv
    after = argv[argv.index("revoke") + 1 :]
    kids = [arg for arg in after if _DASH_KID.fullmatch(arg) and arg not in _REVOKE_OPTIONS]
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
