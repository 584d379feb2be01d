"""The end of a log file, read from the end: records and errors carry the last :data:`LOG_TAIL_CHARS`
characters of a cell's log without reading what may be gigabytes of it."""

from __future__ import annotations

import os
from pathlib import Path

LOG_TAIL_CHARS = 4000


def tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of the UTF-8 log ``path``, reading only its last ``4 * chars``
    bytes (a character cut at the start is dropped; invalid bytes become U+FFFD). "" if unreadable."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 4 * chars))
            data = fh.read()
    except OSError:
        return ""
    if len(data) < size:  # started mid-file: skip UTF-8 continuation bytes of a cut character
        cut = 0
        while cut < min(3, len(data)) and data[cut] & 0xC0 == 0x80:
            cut += 1
        data = data[cut:]
    return data.decode("utf-8", errors="replace")[-chars:]
