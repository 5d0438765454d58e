"""Which models are in memory: how long an idle one stays (`keep_alive`), what one costs in memory (`memory`), and
which idle one leaves to make room for another (`eviction`). Pure: the registry applies them."""

from faisca.lifecycle.eviction import Resident, Room, plan_room
from faisca.lifecycle.keep_alive import FOREVER, parse_keep_alive, parse_keep_alive_flag
from faisca.lifecycle.memory import KvCacheLayout, MemoryEstimate, available_memory_bytes, estimate_memory

__all__ = [
    "FOREVER",
    "KvCacheLayout",
    "MemoryEstimate",
    "Resident",
    "Room",
    "available_memory_bytes",
    "estimate_memory",
    "parse_keep_alive",
    "parse_keep_alive_flag",
    "plan_room",
]
