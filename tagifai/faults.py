"""Failpoints: named places where a fault-injection test can kill the process.

``TAGIFAI_FAILPOINT=<name>`` makes :func:`failpoint` send SIGKILL to its own
process when execution reaches that name, exactly as a machine dying there
would. Unset (always, outside tests), it does nothing.
"""

from __future__ import annotations

import os
import signal

__all__ = ["failpoint"]

ENV = "TAGIFAI_FAILPOINT"


def failpoint(name: str) -> None:
    """Die here with SIGKILL if the ``TAGIFAI_FAILPOINT`` environment variable is ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
