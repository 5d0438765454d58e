from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from faisca.errors import Overloaded
from faisca.scheduler.admission import Admission, AdmissionLimits, AdmittedStream


async def three() -> AsyncIterator[int]:
    for number in range(3):
        yield number


async def broken() -> AsyncIterator[int]:
    yield 1
    raise RuntimeError("boom")


def test_beyond_running_plus_waiting_is_overloaded_with_retry_after() -> None:
    admission = Admission("m", AdmissionLimits(max_running=1, max_waiting=1, retry_after_s=3))
    admission.enter()
    admission.enter()
    with pytest.raises(Overloaded) as caught:
        admission.enter()
    assert caught.value.retry_after_s == 3 and caught.value.status_code == 503
    assert admission.num_in_flight == 2


def test_a_ticket_is_released_once_whatever_ends_the_stream() -> None:
    admission = Admission("m", AdmissionLimits(max_running=1, max_waiting=0))

    async def consume() -> list[int]:
        return [number async for number in AdmittedStream(three(), admission.enter())]

    assert asyncio.run(consume()) == [0, 1, 2]
    assert admission.num_in_flight == 0

    async def fail() -> None:
        async for _ in AdmittedStream(broken(), admission.enter()):
            pass

    with pytest.raises(RuntimeError):
        asyncio.run(fail())
    assert admission.num_in_flight == 0

    async def close_early() -> None:
        stream = AdmittedStream(three(), admission.enter())
        await anext(stream)
        await stream.aclose()
        await stream.aclose()

    asyncio.run(close_early())
    assert admission.num_in_flight == 0

    stream = AdmittedStream(three(), admission.enter())  # never read: dropped
    assert admission.num_in_flight == 1
    del stream
    gc.collect()
    assert admission.num_in_flight == 0
