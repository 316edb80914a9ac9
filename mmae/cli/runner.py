"""How every command ends: its result printed, an mmae error as one line and exit code 1, or
Ctrl+C as one line and exit code 130."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from mmae.core.errors import MMAEError

T = TypeVar("T")


def run_command(prog: str, work: Callable[[], T]) -> T:
    """`work()`, where an `MMAEError` (a config, data or artifact problem the user can fix)
    becomes `prog: message` on stderr and exit status 1 instead of a traceback."""
    try:
        return work()
    except MMAEError as error:
        sys.exit(f"{prog}: {error}")
    except KeyboardInterrupt:  # (mmae-train's training handles Ctrl+C itself: a resumable stop)
        print(f"{prog}: interrupted (Ctrl+C)", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
