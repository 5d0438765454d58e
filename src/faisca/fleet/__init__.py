"""Scale-out: models served by OpenAI-compatible servers elsewhere (vLLM, SGLang, llama-server, other faisca
processes), with faisca as their front door."""

from faisca.fleet.fleet import Fleet, ReplicaStats, UpstreamStream
from faisca.fleet.wire import UpstreamCall

__all__ = ["Fleet", "ReplicaStats", "UpstreamCall", "UpstreamStream"]
