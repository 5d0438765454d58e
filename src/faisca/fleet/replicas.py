"""A model's replicas: where they are (URLs, and the addresses a host name resolves to), whether each is up, and
what each is doing.

A replica is up once a probe found the model in its `GET {base}/models` and its `/health` says it can answer (for
another faisca, which lists its whole catalog, that it serves the model and has loaded it), and down after a connection error, a
failed probe, or a stream it broke; a down replica is probed again after a backoff that doubles from
`BACKOFF_MIN_S` to `BACKOFF_MAX_S` (with jitter, so replicas that fell together do not come back in step), an up
one every `PROBE_INTERVAL_S`. An `http` URL whose host name resolves to several addresses (a Kubernetes headless
service) is a replica per address, re-resolved every `RESOLVE_INTERVAL_S`: replicas come and go without a restart.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 3.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 8.0
RESOLVE_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ModelListing:
    """What a replica's `GET /models` said of the model: its name there, who serves it (`owned_by`: vllm, sglang,
    faisca, ...) and its context, if given."""

    served_name: str
    owned_by: str
    max_model_len: int | None = None


@dataclass(eq=False)
class Replica:
    key: str  # stable label: the URL, with `@address` when a host name stands for several
    base_url: str  # what requests go to (the address in place of the name, for one of several)
    host_header: str | None = None  # the URL's own host, when `base_url` holds an address
    is_up: bool = False
    listing: ModelListing | None = None
    down_reason: str = "not probed yet"
    outstanding: int = 0  # requests sent and not finished (streams count until their end)
    num_requests: int = 0
    num_errors: int = 0
    consecutive_failures: int = 0
    next_probe_at_s: float = 0.0  # monotonic
    retired: bool = False  # its address left the host name's answer; it takes nothing new

    def mark_up(self, listing: ModelListing, now_s: float) -> None:
        self.is_up, self.listing, self.down_reason = True, listing, ""
        self.consecutive_failures = 0
        self.next_probe_at_s = now_s + PROBE_INTERVAL_S

    def mark_down(self, reason: str, now_s: float) -> None:
        self.is_up, self.down_reason = False, reason
        backoff = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** self.consecutive_failures)
        self.consecutive_failures += 1
        self.next_probe_at_s = now_s + backoff * random.uniform(0.8, 1.2)


def pick_listing(models_body: object, wanted: Sequence[str], served_name: str | None) -> ModelListing:
    """The model in a `GET /models` answer: `served_name` if set, else the first of `wanted` (card id, Hugging Face
    id, aliases) listed, else the only model listed. ValueError saying why none fits."""
    data = models_body.get("data") if isinstance(models_body, dict) else None
    if not isinstance(data, list):
        raise ValueError("its /models answer is not an OpenAI model list")
    listed = {str(entry["id"]): entry for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)}
    if served_name is not None:
        names = [served_name]
    else:
        lowered = {name.lower(): name for name in listed}
        names = [lowered[name.lower()] for name in wanted if name.lower() in lowered] or (
            list(listed) if len(listed) == 1 else [])
    name = next((name for name in names if name in listed), None)
    if name is None:
        shown = ", ".join(listed) or "none"
        hint = f"`{served_name}` is not among them" if served_name else "set the card's `served_name`"
        raise ValueError(f"it serves {shown}; {hint}")
    entry = listed[name]
    length = entry.get("max_model_len")
    return ModelListing(name, str(entry.get("owned_by") or ""), length if isinstance(length, int) else None)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Endpoint:
    """A configured URL, and the replicas it stands for now."""

    url: str
    addresses: tuple[str, ...] = field(default=())

    @property
    def resolvable(self) -> bool:
        """Whether its host is a name standing for addresses that may change (an http URL's; https keeps the name,
        for certificates)."""
        parts = urlsplit(self.url)
        return parts.scheme == "http" and parts.hostname is not None and not _is_address(parts.hostname)

    def replica_targets(self) -> list[tuple[str, str, str | None]]:
        """(key, base URL, Host header) for each replica: the URL itself, or one per address when there are
        several."""
        url = self.url.rstrip("/")
        if len(self.addresses) < 2:
            return [(url, url, None)]
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        targets = []
        for address in self.addresses:
            host = f"[{address}]" if ":" in address else address
            targets.append((f"{url}@{address}", urlunsplit(parts._replace(netloc=f"{host}{port}")), parts.netloc))
        return targets


def addresses_from(infos: Sequence[tuple[object, ...]]) -> tuple[str, ...]:
    """The distinct addresses of a `getaddrinfo` answer: IPv4 ones if there are any (`localhost` is then one
    replica, not two), else IPv6; sorted, so that an unchanged answer is the same tuple."""
    v4 = {str(info[4][0]) for info in infos if info[0] == socket.AF_INET}  # type: ignore[index]
    v6 = {str(info[4][0]) for info in infos if info[0] == socket.AF_INET6}  # type: ignore[index]
    return tuple(sorted(v4 or v6))
