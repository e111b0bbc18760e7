"""Give the heap memory that scoring freed back to the operating system.

Each forward pass allocates activation tensors of a new shape (dynamic padding), and glibc keeps
what they free in its arenas instead of returning it, so a long-running worker's resident memory
creeps up batch after batch. ``malloc_trim(0)`` after each scoring call returns it: measured on
batches of up to 64 texts, the scorer's peak RSS fell from 1,463 to 1,158 MB (fp32) and from 1,400
to 1,235 MB (bf16), at no measurable cost in docs/s (BENCHMARKS.md, ninth session).
Elsewhere than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> bool:
    """Return freed heap pages to the OS; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
