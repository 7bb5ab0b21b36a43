"""The one exception type the CLI turns into a single line on stderr, and how to tell
a full disk from other failures (it stops a study instead of failing trial after trial)."""

from __future__ import annotations

import errno

__all__ = ["ModelTooLarge", "TagifaiError", "disk_full"]

# What SQLite (through sqlite3, SQLAlchemy and MLflow) says when a write finds no room.
_SQLITE_FULL = "database or disk is full"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


MAX_MESSAGE_CHARS = 500  # an error echoes values from its input: never a megabyte of them


class TagifaiError(Exception):
    """A problem the user can fix: bad data, bad config, a bad argument.

    The message is one line that names the file, field and value at fault; the
    CLI prints it without a traceback and exits with code 2. Whatever values it
    quotes, it is cut to :data:`MAX_MESSAGE_CHARS` characters.
    """

    def __init__(self, message: str = "") -> None:
        message = " ".join(str(message).split("\n"))
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[: MAX_MESSAGE_CHARS - 40]}... [{len(message):,} characters, cut]"
        super().__init__(message)


class ModelTooLarge(TagifaiError):
    """The sizes asked for make a network over the parameter bound.

    Each size has its own bound, but not their product. In a study this fails the
    trial (its sampled sizes were too large together), not the study.
    """


def disk_full(exc: BaseException) -> str | None:
    """``exc``, or an exception it was raised from, is a write that found the disk full.

    Returns:
        What ran out, in a few words (the file when known), else ``None``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            where = f" writing {current.filename}" if current.filename else ""
            return f"no space left on the device{where}"
        if _SQLITE_FULL in str(current).split("\n", 1)[0]:
            return "no space left for the SQLite database (database or disk is full)"
        current = current.__cause__ or current.__context__
    return None
