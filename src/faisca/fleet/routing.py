"""Which replica takes a request: the least loaded, or the one its conversation went to, within a load bound.

Load is the number of outstanding requests, a stream counting until its last byte (routers that count only
requests in their first second send a burst of long streams to one replica). A conversation's turns share a
prefix the replica that answered the first one has in its cache; they go back to it unless it holds more than its
share: `(1 + slack)` times the average load, rounded up (consistent hashing with bounded loads, Mirrokni, Thorup
and Zadimoghaddam 2018). Past that bound the turn goes to the next replica in the conversation's own order
(rendezvous hashing), so a hot conversation spills over in a fixed order and one replica leaving moves only its own
conversations.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

from faisca.types import ChatRequest

# How far above the average load a conversation's replica may be and still get its next turn.
AFFINITY_SLACK = 0.25


class Loaded(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def outstanding(self) -> int: ...


R = TypeVar("R", bound=Loaded)


def _rank(affinity: str, replica_key: str) -> bytes:
    return hashlib.blake2b(f"{affinity}\0{replica_key}".encode(), digest_size=8).digest()


def choose(replicas: Sequence[R], affinity: str | None = None, *, slack: float = AFFINITY_SLACK) -> R | None:
    """The replica for a request (None when `replicas` is empty). Without `affinity`: the least outstanding (ties
    to the first). With one: the first replica in the affinity's rendezvous order whose load, with this request,
    stays within the bound."""
    if not replicas:
        return None
    if affinity is None:
        return min(replicas, key=lambda replica: replica.outstanding)
    total = sum(replica.outstanding for replica in replicas) + 1  # this request too
    bound = math.ceil((1 + slack) * total / len(replicas))
    ordered = sorted(replicas, key=lambda replica: _rank(affinity, replica.key), reverse=True)
    return next((replica for replica in ordered if replica.outstanding + 1 <= bound), ordered[0])


def conversation_affinity(request: ChatRequest) -> str:
    """What a conversation's turns have in common: its messages up to the first user message (the system prompt and
    the opening question), or a raw prompt's first 1024 characters, with the cache salt (whose prefixes are cached
    apart). Unrelated requests get unrelated keys, and so spread."""
    if request.raw_prompt is not None:
        opening: object = request.raw_prompt[:1024]
    else:
        first_user = next((index for index, message in enumerate(request.messages) if message.role == "user"),
                          len(request.messages) - 1)
        opening = [repr(message.content)[:4096] for message in request.messages[:first_user + 1]]  # bounded work
    return hashlib.blake2b(repr((request.cache_salt, opening)).encode(), digest_size=16).hexdigest()
