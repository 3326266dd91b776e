"""The ``keyrotd`` command line: ``main(argv, clock) -> exit code``, testable in-process.

Exit codes: 0 success, 1 failure (or an invalid token for ``inspect``), 2 usage or configuration
error, 3 ``inspect`` could not read the keys to judge by (URL or storage). Every error is one line
on stderr; the traceback only with ``--debug``. Heavy modules (boto3, the scheduler, the HTTP
server) are imported by the commands that need them. The package: :mod:`~keyrotd.cli.parser`
(the arguments), :mod:`~keyrotd.cli.commands` (the operator commands),
:mod:`~keyrotd.cli.inspect` (``inspect``'s reading of the token and the keys),
:mod:`~keyrotd.cli.admin_client_commands` (``client``), :mod:`~keyrotd.cli.handover` (emergency
notices).

Output to a closed pipe (``keyrotd status | head -1``) ends quietly, exit 0, for every command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from keyrotd.cli.parser import COMMANDS, build_parser, kid_after_double_dash
from keyrotd.errors import KeyrotdError

if TYPE_CHECKING:
    from keyrotd.times import Clock

__all__ = ["build_parser", "kid_after_double_dash", "main"]


def main(argv: Sequence[str] | None = None, clock: Clock | None = None) -> int:
    """Run ``keyrotd ARGV`` (default ``sys.argv[1:]``) at the time ``clock`` tells (default: the
    system clock). ``--help`` imports only the parser: see tests/test_cli.py."""
    try:
        code = _run(argv, clock)
        sys.stdout.flush()  # here, not at exit: a closed pipe is still ours to handle
    except BrokenPipeError:
        _discard_stdout()
        return 0
    return code


def _run(argv: Sequence[str] | None, clock: Clock | None) -> int:
    args_list = kid_after_double_dash(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args_list
    try:
        args = build_parser(_command_first(args_list)).parse_args(args_list)
        if args.command == "client":  # keyrotd.cli.admin_client_commands: no storage
            from keyrotd.cli.admin_client_commands import dispatch as client_dispatch

            return client_dispatch(args)
        from keyrotd.cli import commands
        from keyrotd.times import utc_now

        return commands.dispatch(args, utc_now if clock is None else clock)
    except KeyrotdError as exc:
        if debug:
            _print_traceback()
        print(f"keyrotd: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:  # the reader of stdout went away: main() ends quietly
        raise
    except Exception as exc:  # the last resort: still one line unless --debug
        if debug:
            _print_traceback()
        print(
            f"keyrotd: internal error ({type(exc).__name__}): {_one_line(str(exc))}"
            " (run with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 1


def _command_first(args: list[str]) -> str | None:
    """The command, when it comes first (``keyrotd status ...``): then its parser alone is built,
    as it alone parses what follows. Otherwise (an option first, ``--help``, no command) all are.
    """
    return args[0] if args and args[0] in COMMANDS else None


def _print_traceback() -> None:
    import traceback  # --debug only: not on every start

    traceback.print_exc()


def _discard_stdout() -> None:
    """The reader of stdout is gone: send what is still buffered to /dev/null, so that the
    interpreter's own flush at exit does not fail again (as the Python docs advise for SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file descriptor (a test's capture): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _one_line(text: str) -> str:
    return " ".join(text.split())
