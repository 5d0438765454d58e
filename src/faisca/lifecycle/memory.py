"""What a loaded model costs in memory, estimated before loading it, and what the machine has to give.

    weights     the GGUF file's size (llama.cpp maps it whole)
    projector   the vision projector's file size, if any
    kv cache    tokens × layers × KV heads × (key size × 2 bytes (F16) + value size × 34/32 bytes (Q8_0))
    runtime     32 MiB + 512 bytes per vocabulary token: llama.cpp's compute and logits buffers, its vocabulary and
                faisca's own token tables (measured: Gemma 3 270M and SmolLM2 135M land within 5 % of this)

The KV cache is the engine's settings read against the GGUF's metadata: every layer keeps every cell (faisca runs
llama.cpp with `swa_full`, so sliding-window layers are no smaller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_KEY_BYTES = 2.0  # F16
_VALUE_BYTES = {True: 34 / 32, False: 2.0}  # Q8_0 when the value size is a multiple of 32, else F16
_RUNTIME_FIXED_BYTES = 32 * 1024 * 1024
_RUNTIME_BYTES_PER_VOCAB_TOKEN = 512


@dataclass(frozen=True)
class KvCacheLayout:
    num_layers: int
    num_kv_heads: int
    key_size: int
    value_size: int

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> KvCacheLayout:
        """From a GGUF's metadata (`{arch}.block_count`, `.attention.head_count_kv`, `.attention.key_length`...).
        ValueError when the architecture's keys are missing."""
        arch = metadata.get("general.architecture", "")

        def number(key: str, default: int | None = None) -> int:
            try:
                return int(metadata[f"{arch}.{key}"])
            except (KeyError, ValueError):  # absent, or a per-layer array
                if default is None:
                    raise ValueError(f"the GGUF's metadata has no `{arch}.{key}`") from None
                return default

        num_heads = number("attention.head_count")
        head_size = number("embedding_length") // num_heads
        return cls(num_layers=number("block_count"), num_kv_heads=number("attention.head_count_kv", num_heads),
                   key_size=number("attention.key_length", head_size),
                   value_size=number("attention.value_length", head_size))

    def bytes_per_token(self) -> float:
        value_bytes = _VALUE_BYTES[self.value_size % 32 == 0]
        return self.num_layers * self.num_kv_heads * (self.key_size * _KEY_BYTES + self.value_size * value_bytes)


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    projector_bytes: int
    runtime_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.projector_bytes + self.runtime_bytes


def estimate_memory(*, weights_bytes: int, layout: KvCacheLayout, kv_cache_tokens: int, vocab_size: int,
                    projector_bytes: int = 0) -> MemoryEstimate:
    return MemoryEstimate(
        weights_bytes=weights_bytes,
        kv_cache_bytes=round(layout.bytes_per_token() * kv_cache_tokens),
        projector_bytes=projector_bytes,
        runtime_bytes=_RUNTIME_FIXED_BYTES + _RUNTIME_BYTES_PER_VOCAB_TOKEN * vocab_size,
    )


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def available_memory_bytes(*, proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process could still take: the kernel's MemAvailable, or less where its cgroup (a container's
    memory limit) leaves less. None when neither can be read (not Linux)."""
    candidates = []
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limit, current = _read_int(cgroup / "memory.max"), _read_int(cgroup / "memory.current")
    if limit is not None and current is not None:
        candidates.append(max(0, limit - current))
    return min(candidates) if candidates else None


def default_budget_bytes(resident_bytes: int = 0) -> int | None:
    """The byte budget when none is given: 90 % of what the machine has now, plus what is already resident."""
    available = available_memory_bytes()
    return None if available is None else int(available * 0.9) + resident_bytes


