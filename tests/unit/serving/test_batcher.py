"""The batcher's cost model: the fixed cost of one call, from recent batch timings."""

from __future__ import annotations

import pytest

from tuneserve.serving.batcher import CostModel


def test_the_fixed_cost_of_a_call_is_the_intercept_of_recent_batches():
    model = CostModel()
    assert model.overhead() is None
    for items in (1, 4, 8, 16, 2, 32):
        model.observe(items, 0.010 + 0.001 * items)  # 10 ms per call, 1 ms per item
    assert model.overhead() == pytest.approx(0.010, abs=1e-6)


def test_one_batch_size_gives_its_whole_time_and_old_batches_fade():
    model = CostModel(decay=0.5)
    model.observe(1, 0.004)
    assert model.overhead() == pytest.approx(0.004)
    for _ in range(40):  # the machine got busier: recent batches dominate
        model.observe(1, 0.020)
        model.observe(10, 0.020 + 0.010)
    assert model.overhead() == pytest.approx(0.019, abs=0.001)


def test_a_batch_that_fails_is_retried_one_request_at_a_time():
    """Any exception, not only a bad-input one, fails only the request that caused it."""
    import asyncio

    import numpy as np

    from tuneserve.serving.batcher import Batcher

    def run(items):
        if "poison" in list(items):
            raise TypeError("the tokenizer choked")
        return np.arange(len(items), dtype=np.float64).reshape(-1, 1)

    batcher = Batcher(run, max_batch_size=64, max_queue_delay_ms=50)

    async def scenario() -> list[object]:
        requests = [["a"], ["b", "c"], ["poison"], ["d"]]
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)

    results = asyncio.run(scenario())
    assert isinstance(results[2], TypeError)
    assert [np.asarray(r).shape for i, r in enumerate(results) if i != 2] == [
        (1, 1),
        (2, 1),
        (1, 1),
    ]
