"""The one exception type the CLI turns into a single line on stderr."""

from __future__ import annotations

__all__ = ["TagifaiError"]


class TagifaiError(Exception):
    """A problem the user can fix: bad data, bad config, a bad argument.

    The message is one line that names the file, field and value at fault; the
    CLI prints it without a traceback and exits with code 2.
    """
