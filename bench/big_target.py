"""A target that costs like a bigger model: Gemma 3 270M plus extra layers that (nearly) do nothing.

Not a test. Writes, with the `gguf` package, a copy of the embedded Gemma 3 270M GGUF (every KV field, every tensor
in its own quantization type) with `gemma3.block_count` raised by E and E layers appended, blk.18 ... blk.(17 + E),
each a copy of layer (i mod 18) (so it keeps its source's sliding-window type: llama.cpp makes every 6th layer
global by index), except for the two projections that write into the residual stream, `attn_output` and
`ffn_down`, and the RMS norms after them, `post_attention_norm` and `post_ffw_norm`:

- noise 0: the projections are all zero bytes (a zero block scale in every quantization type), so each extra layer
  adds exactly 0 to the residual stream and the logits are the 270M's, bit for bit, at the cost of 18 + E layers;
- noise s > 0: the projections are random (random quantized bytes with a fixed block scale, in their own type),
  and the post-norm weights are the constant s, so each extra sub-layer adds a vector of RMS s (the RMS norm scales
  whatever the projection gives to unit RMS: s alone sets the size of the perturbation). That moves the logits a
  little, so the 270M, drafting for this target, sees part of its drafts rejected: s sets the acceptance rate.

The files are cached in ~/.cache/faisca/bench/ keyed by (E, noise, seed). `--check` compares the target with the
270M through llama.cpp (faisca's context settings): the last prompt position's logits and a greedy continuation.

    .venv/bin/python bench/big_target.py --layers 120 --noise 0 [--seed 0] [--check]
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import gguf
import numpy as np

from faisca.catalog import Catalog
from faisca.engine.weights import resolve_gguf

CACHE = Path.home() / ".cache" / "faisca" / "bench"
BLOCK_COUNT = "gemma3.block_count"
OUTPUT_PROJECTIONS = ("attn_output", "ffn_down")  # write into the residual stream (through the post-norms)
POST_NORMS = ("post_attention_norm", "post_ffw_norm")
Q = gguf.GGMLQuantizationType
# byte offsets of the f16 block scales (d, and dmin for the K-quants that have one) within one block of each type
SCALE_OFFSETS = {Q.Q4_0: (0,), Q.Q5_0: (0,), Q.Q8_0: (0,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}
BLOCK_SCALE = np.float16(2 ** -10)  # any finite scale would do: the post-norm rescales the projection's output


def embedded_gguf() -> Path:
    return resolve_gguf(Catalog.from_dirs().resolve("gemma3:270m"))


def cache_path(num_layers: int, noise: float, seed: int) -> Path:
    return CACHE / f"gemma3-270m-plus{num_layers}-noise{noise:g}-seed{seed}.gguf"


def random_tensor(qtype: Q, byte_shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random weights of a tensor in quantization type `qtype`, as the bytes (or floats) the GGUF stores: random
    quants and a fixed block scale, so no quantizer is needed."""
    if qtype == Q.F32:
        return rng.standard_normal(byte_shape, dtype=np.float32)
    if qtype == Q.F16:
        return rng.standard_normal(byte_shape, dtype=np.float32).astype(np.float16)
    if qtype not in SCALE_OFFSETS:
        raise ValueError(f"no random weights for {qtype.name}")
    block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
    data = rng.integers(0, 256, size=byte_shape, dtype=np.uint8)
    blocks = data.reshape(-1, block_bytes)
    for offset in SCALE_OFFSETS[qtype]:
        blocks[:, offset: offset + 2] = np.frombuffer(BLOCK_SCALE.tobytes(), dtype=np.uint8)
    return data


def write_big_target(source: Path, num_layers: int, noise: float, seed: int, path: Path) -> None:
    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    num_source_layers = int(reader.fields[BLOCK_COUNT].contents())
    writer = gguf.GGUFWriter(path.with_suffix(".partial"), arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the header's own fields, and the one the writer adds itself
        value = num_source_layers + num_layers if field.name == BLOCK_COUNT else field.contents()
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type)
    layers: dict[int, dict[str, gguf.ReaderTensor]] = {}
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
        if match := re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", tensor.name):
            layers.setdefault(int(match[1]), {})[match[2]] = tensor
    rng = np.random.default_rng(seed)
    for extra in range(num_layers):
        for kind, tensor in layers[extra % num_source_layers].items():
            data = tensor.data
            if kind in OUTPUT_PROJECTIONS:
                data = np.zeros_like(data) if noise == 0 else random_tensor(tensor.tensor_type, data.shape, rng)
            elif kind in POST_NORMS and noise > 0:
                data = np.full_like(data, noise)
            writer.add_tensor(f"blk.{num_source_layers + extra}.{kind}.weight", data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.with_suffix(".partial").rename(path)


def big_target(num_layers: int, noise: float = 0.0, seed: int = 0) -> Path:
    """The 270M plus `num_layers` extra layers at `noise`, written once into the cache."""
    path = cache_path(num_layers, noise, seed)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_big_target(embedded_gguf(), num_layers, noise, seed, path)
    return path


def greedy(path: Path, prompt: str, num_tokens: int, num_threads: int) -> tuple[np.ndarray, list[int]]:
    """The prompt's last-position logits and `num_tokens` greedy tokens after it, through llama.cpp with faisca's
    context settings (no extra buffer types, flash attention, F16 K and Q8_0 V caches)."""
    import llama_cpp
    from llama_cpp import _internals

    from faisca.engine.batch_invariance import make_batch_invariant
    from faisca.engine.native_log import NativeLog

    NativeLog.install()
    model_params, params = llama_cpp.llama_model_default_params(), llama_cpp.llama_context_default_params()
    make_batch_invariant(model_params, params)
    model = _internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
    params.n_ctx = params.n_batch = params.n_ubatch = 512
    params.n_threads = params.n_threads_batch = num_threads
    context = _internals.LlamaContext(model=model, params=params, verbose=False)
    batch = _internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=1, verbose=False)
    tokens = model.tokenize(prompt.encode(), add_bos=False, special=True)
    first: np.ndarray | None = None
    generated: list[int] = []
    position = 0
    for _ in range(num_tokens):
        batch.set_batch(tokens[position:], n_past=position, logits_all=False)
        context.decode(batch)
        position = len(tokens)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context.ctx, -1), shape=(model.n_vocab(),))
        first = logits.copy() if first is None else first
        tokens.append(int(np.argmax(logits)))
        generated.append(tokens[-1])
    batch.close()
    context.close()
    model.close()
    assert first is not None
    return first, generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, required=True, help="extra layers E")
    parser.add_argument("--noise", type=float, default=0.0, help="RMS each extra sub-layer adds (0: nothing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--check", action="store_true", help="compare with the 270M: logits and 64 greedy tokens")
    args = parser.parse_args()
    path = big_target(args.layers, args.noise, args.seed)
    print(f"{path} ({path.stat().st_size / 2**20:.0f} MiB)")
    if args.check:
        prompt = "<bos>Q: What causes the seasons on Earth?\nA:"
        small_logits, small_tokens = greedy(embedded_gguf(), prompt, 64, args.threads)
        big_logits, big_tokens = greedy(path, prompt, 64, args.threads)
        same = next((i for i, (a, b) in enumerate(zip(small_tokens, big_tokens)) if a != b), len(small_tokens))
        print(f"last prompt position: max |logit difference| {np.abs(small_logits - big_logits).max():.4g} "
              f"(logits' RMS {np.sqrt(np.mean(small_logits ** 2)):.3g}); greedy tokens the same: {same}/64")


if __name__ == "__main__":
    main()
