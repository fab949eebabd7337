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
