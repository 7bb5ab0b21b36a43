"""The one exception type the CLI turns into a single line on stderr, how text from
outside is shown on a terminal, and how to tell a full disk from other failures (it
stops a study instead of failing trial after trial)."""

from __future__ import annotations

import errno
import logging
import unicodedata

__all__ = [
    "ModelTooLarge",
    "TagifaiError",
    "VisibleLogText",
    "disk_full",
    "missing_package",
    "visible",
]

# What SQLite (through sqlite3, SQLAlchemy and MLflow) says when a write finds no room.
_SQLITE_FULL = "database or disk is full"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


# A module an optional client imports, and the package that installs it (others: the
# module's own name).
_PACKAGE_OF_MODULE = {
    "MySQLdb": "mysqlclient",
    "botocore": "boto3",
    "google": "google-cloud-storage",
    "azure": "azure-storage-blob",
    "oracledb": "oracledb",
}

MAX_MESSAGE_CHARS = 500  # an error echoes values from its input: never a megabyte of them


def visible(text: str, keep_newlines: bool = False) -> str:
    """``text`` with its control and format characters written out as Python escapes
    (``\\x1b``, ``\\u202e``): a file name or value from outside then cannot move the
    cursor, recolour or rewrite the terminal, or reorder what is shown.

    Args:
        text: What is about to be printed.
        keep_newlines: Keep ``\\n`` as it is (a log record with a traceback).
    """
    return "".join(
        repr(char)[1:-1]
        if unicodedata.category(char) in ("Cc", "Cf") and not (keep_newlines and char == "\n")
        else char
        for char in text
    )


class VisibleLogText(logging.Filter):
    """A handler filter: the message and string arguments of every record it passes go
    through :func:`visible` (newlines kept), whatever logged them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = visible(record.msg, keep_newlines=True)
        if isinstance(record.args, tuple):
            record.args = tuple(_visible_arg(arg) for arg in record.args)
        if record.exc_info and not record.exc_text:  # what the formatter would write
            traceback = logging.Formatter().formatException(record.exc_info)
            record.exc_text = visible(traceback, keep_newlines=True)
        return True


def _visible_arg(arg: object) -> object:
    """A log argument as it will be shown: itself, unless its text has control characters
    (a path, a name), then that text written out."""
    if isinstance(arg, int | float):
        return arg
    text = arg if isinstance(arg, str) else str(arg)
    shown = visible(text, keep_newlines=True)
    return arg if shown == text else shown


class TagifaiError(Exception):
    """A problem the user can fix: bad data, bad config, a bad argument.

    The message is one line that names the file, field and value at fault; the
    CLI prints it without a traceback and exits with code 2. Whatever values it
    quotes, it is cut to :data:`MAX_MESSAGE_CHARS` characters, and their control
    characters are written out (:func:`visible`).
    """

    def __init__(self, message: str = "") -> None:
        message = visible(" ".join(str(message).split("\n")))
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[: MAX_MESSAGE_CHARS - 40]}... [{len(message):,} characters, cut]"
        super().__init__(message)


class ModelTooLarge(TagifaiError):
    """The sizes asked for make a network over the parameter bound.

    Each size has its own bound, but not their product. In a study this fails the
    trial (its sampled sizes were too large together), not the study.
    """


def missing_package(exc: ImportError) -> str:
    """The package to install for the module an ``ImportError`` could not import."""
    top = (exc.name or "").split(".")[0]
    return _PACKAGE_OF_MODULE.get(top, top or "its client package")


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
