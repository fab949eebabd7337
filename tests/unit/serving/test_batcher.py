"""The batcher: its cost model, a failed batch retried request by request, timed-out
requests dropped from the queue, and one thread per model."""

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


def test_work_of_requests_that_timed_out_is_dropped_from_the_queue():
    """A request that timed out (504) must not keep the model busy for those behind it."""
    import asyncio
    import threading

    import numpy as np

    from tuneserve.serving.batcher import Batcher

    calls: list[list[str]] = []
    release = threading.Event()

    def run(items):
        calls.append(list(items))
        release.wait(5)  # the first call blocks the model while the others queue
        return np.zeros((len(items), 1))

    batcher = Batcher(run, max_batch_size=1, max_queue_delay_ms=0)

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.05)  # the first runs; the next ten wait in the queue
        late = [asyncio.wait_for(batcher.submit([f"late-{i}"]), 0.05) for i in range(10)]
        outcomes = await asyncio.gather(*late, return_exceptions=True)
        assert all(isinstance(o, TimeoutError) for o in outcomes)
        release.set()
        await first
        assert (await batcher.submit(["after"])).shape == (1, 1)

    asyncio.run(scenario())
    assert calls == [["first"], ["after"]]  # none of the timed-out requests ran
    assert batcher.stats.dropped == 10


def test_each_model_runs_on_its_own_thread(cancer_package, digits_package):
    from tuneserve.serving.repository import ModelSpec, Repository

    repository = Repository(
        [ModelSpec.parse(f"a={cancer_package}"), ModelSpec.parse(f"b={digits_package}")]
    )
    repository.load_all()
    a, b = repository.get("a").batcher, repository.get("b").batcher
    assert a.executor is not b.executor  # a slow model holds only its own queue
