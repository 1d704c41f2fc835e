"""The API's background coroutines (``broker/background.py``)."""

from __future__ import annotations

import asyncio

from model_proxy.broker.background import BackgroundTask


def test_a_background_task_runs_until_stopped() -> None:
    ticks: list[int] = []

    async def loop() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        task = BackgroundTask("ticker", loop)
        await task.stop()  # stopping one never started is harmless
        task.start()
        await asyncio.sleep(0.02)
        await task.stop()
        counted = len(ticks)
        await asyncio.sleep(0.01)
        assert len(ticks) == counted > 0
        await task.stop()  # and twice too

    asyncio.run(scenario())
