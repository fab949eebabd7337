"""The worker's back-pressure: a model's items in its batcher never pass the capacity."""

from __future__ import annotations

import asyncio

from tuneserve.queueing.capacity import ItemGate


def test_items_wait_for_room_and_a_request_over_capacity_goes_alone():
    gate = ItemGate(capacity=4)
    most = {"m": 0}

    async def one(items: int) -> None:
        async with gate.hold("m", items):
            most["m"] = max(most["m"], gate.held("m"))
            assert gate.held("m") <= 4 or items == 6
            await asyncio.sleep(0)
            assert gate.held("other") == 0

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in [3, 2, 1, 4, 6, 1, 1]))

    asyncio.run(main())
    assert most["m"] == 6  # the 6-item request alone; every other moment at most 4
    assert gate.held("m") == 0


def test_requests_are_let_in_in_arrival_order_so_a_large_one_is_not_starved():
    """Capacity 10, 3-item requests coming all the time: a 10-item request that came
    before them goes first (it used to wait for as long as small ones kept it from fitting)."""
    gate = ItemGate(capacity=10)
    order: list[str] = []

    async def one(name: str, items: int, release: asyncio.Event) -> None:
        async with gate.hold("m", items):
            order.append(name)
            await release.wait()

    async def main() -> None:
        first, big, later = asyncio.Event(), asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(one("first", 3, first))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(one("big", 10, big)))
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(one("later", 3, later)))  # 3 + 3 would fit
        cancelled = asyncio.create_task(one("cancelled", 1, later))
        await asyncio.sleep(0)
        assert order == ["first"]
        cancelled.cancel()
        first.set()
        await asyncio.sleep(0.01)
        assert order == ["first", "big"] and gate.held("m") == 10
        big.set()
        await asyncio.sleep(0.01)
        assert order == ["first", "big", "later"]
        later.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert gate.held("m") == 0
