"""The vision encoder's bookkeeping (`EncodedImages`): encodings belong to the sequences waiting for them; what nobody
waits for is cancelled before it starts, or kept only among the last few results once done.

The encoder here is a stand-in function on a real one-thread pool (as the vision encoder's), so that the test decides
when an encoding starts and ends; libmtmd's own encoding is exercised end to end in tests/e2e/test_vision.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from faisca.engine.base import PromptImage
from faisca.engine.vision import EncodedImages
from faisca.errors import EngineError

WAIT_S = 30  # a bound on waiting for the encoder thread, never reached when all is well


def image(name: str) -> PromptImage:
    return PromptImage(start=0, num_tokens=4, digest=name, chunk=None)


class Encoder:
    """Encodes an image into [its digest's length]; images named in `held` wait until `let_go(name)`."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.held: dict[str, threading.Event] = {}
        self.is_started = {name: threading.Event() for name in "ABCDEFG"}

    def hold(self, name: str) -> None:
        self.held[name] = threading.Event()

    def let_go(self, name: str) -> None:
        self.held[name].set()

    def __call__(self, prompt_image: PromptImage) -> np.ndarray:
        name = prompt_image.digest
        self.started.append(name)
        self.is_started.setdefault(name, threading.Event()).set()
        if name in self.held:
            assert self.held[name].wait(WAIT_S)
        if name.startswith("bad"):
            raise EngineError("encoding an image failed")
        return np.full(4, len(name), dtype=np.float32)


@pytest.fixture()
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=1)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


class Ready:
    """`on_ready`, counting calls, and a way to wait for the next one."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.num_calls = 0

    def __call__(self) -> None:
        with self._condition:
            self.num_calls += 1
            self._condition.notify_all()

    def wait_for(self, num_calls: int) -> None:
        with self._condition:
            assert self._condition.wait_for(lambda: self.num_calls >= num_calls, WAIT_S)


def test_a_waiter_gets_its_embeddings_once_encoded_and_they_are_kept(pool: ThreadPoolExecutor) -> None:
    encoder, ready = Encoder(), Ready()
    encoded = EncodedImages(encoder, pool, max_kept=16)
    assert encoded.get(image("A"), owner=1, on_ready=ready) is None
    ready.wait_for(1)
    embeddings = encoded.get(image("A"), owner=1, on_ready=ready)
    assert embeddings is not None and embeddings.tolist() == [1, 1, 1, 1]
    assert encoded.get(image("A"), owner=2, on_ready=ready) is embeddings  # from the kept ones: not encoded again
    assert encoder.started == ["A"] and encoded.num_encoding == 0 and encoded.kept_digests == ["A"]


def test_an_encoding_not_started_is_cancelled_when_its_only_waiter_ends(pool: ThreadPoolExecutor) -> None:
    encoder, ready = Encoder(), Ready()
    encoder.hold("A")
    encoded = EncodedImages(encoder, pool, max_kept=16)
    encoded.get(image("A"), owner=1, on_ready=ready)  # takes the encoder thread
    assert encoder.is_started["A"].wait(WAIT_S)
    encoded.get(image("B"), owner=2, on_ready=ready)  # queued behind it
    encoded.release(2)  # its request was aborted
    assert encoded.num_encoding == 1  # only A is left
    encoder.let_go("A")
    ready.wait_for(2)  # B's cancellation, then A's end
    encoded.get(image("A"), owner=1, on_ready=ready)
    pool.submit(lambda: None).result()  # the pool has run everything queued before this
    assert encoder.started == ["A"] and "B" not in encoded.kept_digests


def test_an_encoding_under_way_nobody_waits_for_ends_among_the_kept_only(pool: ThreadPoolExecutor) -> None:
    encoder, ready = Encoder(), Ready()
    encoder.hold("A")
    encoded = EncodedImages(encoder, pool, max_kept=2)
    encoded.get(image("A"), owner=1, on_ready=ready)
    assert encoder.is_started["A"].wait(WAIT_S)
    encoded.release(1)  # aborted while its image is being encoded: that cannot be interrupted
    assert encoded.num_encoding == 1
    encoder.let_go("A")
    ready.wait_for(1)
    assert encoded.num_encoding == 0 and encoded.kept_digests == ["A"]  # held by the bounded cache, nowhere else
    for owner, name in enumerate(["BB", "CCC"], start=2):  # two newer images push it out
        encoded.get(image(name), owner=owner, on_ready=ready)
        ready.wait_for(owner)
        encoded.get(image(name), owner=owner, on_ready=ready)
        encoded.release(owner)
    assert encoded.kept_digests == ["BB", "CCC"] and encoded.num_encoding == 0


def test_a_second_waiter_keeps_an_encoding_alive_and_adopts_an_abandoned_one(pool: ThreadPoolExecutor) -> None:
    encoder, ready = Encoder(), Ready()
    encoder.hold("A")
    encoded = EncodedImages(encoder, pool, max_kept=16)
    encoded.get(image("A"), owner=1, on_ready=ready)
    assert encoder.is_started["A"].wait(WAIT_S)
    encoded.get(image("A"), owner=2, on_ready=ready)  # the same picture in another request
    encoded.release(1)
    assert encoded.num_encoding == 1  # 2 still waits
    encoded.release(2)
    encoded.get(image("A"), owner=3, on_ready=ready)  # a retry finds the encoding under way
    encoder.let_go("A")
    ready.wait_for(1)
    embeddings = encoded.get(image("A"), owner=3, on_ready=ready)
    assert embeddings is not None and encoder.started == ["A"]


def test_a_failed_encoding_fails_its_waiter_and_is_not_kept(pool: ThreadPoolExecutor) -> None:
    encoder, ready = Encoder(), Ready()
    encoded = EncodedImages(encoder, pool, max_kept=16)
    encoded.get(image("bad"), owner=1, on_ready=ready)
    ready.wait_for(1)
    with pytest.raises(EngineError, match="encoding an image failed"):
        encoded.get(image("bad"), owner=1, on_ready=ready)
    encoded.release(1)
    encoded.get(image("bad2"), owner=2, on_ready=ready)
    encoded.release(2)  # aborted: its failure is nobody's
    ready.wait_for(2)
    assert encoded.num_encoding == 0 and encoded.kept_digests == []


def test_ending_a_sequence_that_waits_for_nothing_changes_nothing(pool: ThreadPoolExecutor) -> None:
    encoded = EncodedImages(Encoder(), pool, max_kept=16)
    encoded.release(7)
    assert encoded.num_encoding == 0 and encoded.kept_digests == []
