"""Pausing Python's cyclic garbage collector around allocation-heavy bookkeeping.

Resolving a spec allocates a few objects per parameter tensor. With tens of thousands of tensors the
allocations trigger collections that each walk the whole heap, the model's modules included: at
50,000 tensors that doubled the time of building the groups. Nothing built there forms cycles that
need collecting, so the collector waits until the work is done.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block, and restore its state after it.

    Also a decorator: ``@gc_paused()``.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
