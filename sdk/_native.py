"""Keep native libraries' stderr chatter out of the user's terminal.

TensorFlow's converter and LiteRT's interpreter print from C++ straight to file
descriptor 2, past Python's logging. :func:`native_stderr_to_log` sends that output to
this package's log at DEBUG level instead (visible with ``--debug``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_STDERR_FD = 2  # where native code writes, whatever sys.stderr is at the moment
_lock = threading.RLock()  # re-entrant: steps nest (conversion wraps evaluation)


@contextlib.contextmanager
def native_stderr_to_log(what: str) -> Iterator[None]:
    """Redirect fd 2 to a temporary file for the duration, then log what was written.

    Args:
        what: Names the step in the log line.
    """
    with _lock, tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        saved = os.dup(_STDERR_FD)
        os.dup2(capture.fileno(), _STDERR_FD)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, _STDERR_FD)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace").strip()
            if text:
                logger.debug("native output during %s:\n%s", what, text)
