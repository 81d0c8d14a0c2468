"""When a process freezes its heap: at the first snapshot, then each time the configuration doubles."""

from __future__ import annotations

import gc

from shared.heap import HeapFreezer


def test_the_first_snapshot_then_each_doubling_calls_for_a_freeze() -> None:
    heap = HeapFreezer()
    assert heap.due(0)
    heap._frozen_at = 0  # as freeze(0) leaves it, without freezing the test process
    assert not heap.due(49)
    assert heap.due(50)  # small configurations: only once 50 backends more
    heap._frozen_at = 400
    assert not heap.due(799)
    assert heap.due(800)


def test_a_freeze_moves_what_is_alive_out_of_the_collectors_sight() -> None:
    heap = HeapFreezer()
    try:
        heap.freeze(1000)
        assert gc.get_freeze_count() > 0
        assert not heap.due(1999) and heap.due(2000)
    finally:
        gc.unfreeze()
