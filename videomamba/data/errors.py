"""The data layer's error: bad user data (an annotation or meta file, a listed image or video), reported
with the file (and line) so that a command can end with that one line instead of a traceback."""
from __future__ import annotations


class DataError(ValueError):
    """Bad data; the message names the file (and line)."""
