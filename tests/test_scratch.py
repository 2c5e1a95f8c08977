"""The scratch arena the checkpoint compressor cuts its extracted planes from."""

from __future__ import annotations

import numpy as np

from models.compression.checkpoint import scratch


def test_arena_is_kept_for_the_next_call_and_never_shared():
    with scratch.arena(1000) as take:
        a = take(600)
        b = take(400)
        c = take(1)  # beyond the arena: a fresh array
        assert a.base is b.base is not None and c.base is None
        assert not np.shares_memory(a, b)
        with scratch.arena(1000) as take2:  # the kept buffer is lent out: a second caller gets its own
            d = take2(600)
            assert not np.shares_memory(a, d)
    with scratch.arena(900) as take:  # one of the two came back: reused, no fresh pages
        e = take(900)
        assert np.shares_memory(e, a) or np.shares_memory(e, d)


def test_sizes_beyond_keep_are_not_kept():
    with scratch.arena(scratch.KEEP + 1) as take:
        x = take(10)
        assert x.base is None
    with scratch.arena(0) as take:
        assert len(take(5)) == 5
