"""Import every keyrotd module now, for a process that drops to ``nobody`` afterwards.

A checkout or virtualenv under a directory only root can traverse (``mktemp -d`` makes one 0700)
cannot be read by ``nobody``: a module keyrotd imports lazily after the drop (a storage backend,
the revision file, a CLI command) would fail with ``ModuleNotFoundError``. The launchers that run
keyrotd as ``nobody`` call :func:`preload` as root first (``LAUNCH_PREFIX`` in a ``python -c``
string). Modules of an optional role whose library is not installed are skipped.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import keyrotd

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: the directory that holds ``tests``."""
STDLIB = ("encodings.idna", "json", "email.utils", "http.client", "logging.config", "ctypes")
"""Standard modules keyrotd or its libraries import lazily (the interpreter may be unreadable)."""
LAUNCH_PREFIX = (
    f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
    "from tests.support.preload import preload; preload(); del sys.path[0]\n"
)
"""The first line of a ``python -c`` launcher: preload, as root, everything keyrotd may import."""


def preload() -> None:
    for name in STDLIB:
        importlib.import_module(name)
    for module in pkgutil.walk_packages(keyrotd.__path__, "keyrotd."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except ImportError:
            continue  # an optional role whose library is not installed


CLI_AS_NOBODY = (
    LAUNCH_PREFIX
    + """
import os, sys
import keyrotd.cli
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
sys.exit(keyrotd.cli.main(sys.argv[1:]))
"""
)
"""``python -c CLI_AS_NOBODY ARGS``: ``keyrotd ARGS`` as nobody, all imported as root first."""
