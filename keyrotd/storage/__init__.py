"""Storage backends. ``open_storage`` opens the one ``storage.type`` names
(:mod:`keyrotd.storage.registry`); each backend's libraries load only when it opens.

Every backend it opens, built-in or installed as a package, is wrapped in a
:class:`~keyrotd.storage.revisions.RevisionGuard`: its readers refuse a document that goes back
(G8), and ``storage.revision_file`` keeps the marks across restarts, whatever the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from keyrotd.storage.interface import BaseStorage, Storage, Versioned

if TYPE_CHECKING:
    from keyrotd.storage.registry import StorageChoice

__all__ = ["BaseStorage", "Storage", "Versioned", "open_storage"]


def open_storage(
    settings: StorageChoice, on_rollback: Callable[[str], None] | None = None
) -> Storage:
    """The configured backend behind the G8 guard; ``on_rollback(keyset)`` counts refusals."""
    from keyrotd.storage.registry import chosen_backend
    from keyrotd.storage.revision_file import RevisionFile
    from keyrotd.storage.revisions import RevisionGuard

    backend = chosen_backend(settings.type)
    opened = backend.open(settings.options)
    marks = None
    if settings.revision_file is not None:
        owner_of = None if backend.store_owner is None else backend.store_owner(settings.options)
        marks = RevisionFile(settings.revision_file, owner_of)
    if on_rollback is None:
        return RevisionGuard(opened, marks)
    return RevisionGuard(opened, marks, on_rollback)
