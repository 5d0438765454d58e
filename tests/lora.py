"""Random LoRA adapters for Gemma 3 270M, written with the `gguf` package, and llama.cpp's own greedy answer with one.

No trained adapter is reachable from here, so the LoRA tests make one: for each adapted weight W (ggml shape
[n_in, n_out]) a pair `<W>.lora_a` (numpy [rank, n_in]) and `<W>.lora_b` (numpy [n_out, rank]), which llama.cpp adds
as scale * alpha / rank * B @ A x (src/llama-adapter.cpp checks exactly these shapes). With alpha = rank the adapter's
strength is the request's scale times `scale_of_b`; the default is large enough that the greedy answer to a short
prompt leaves the base's within a few tokens while the logits stay finite.

`reference_greedy` is the independent answer the engine's LoRA path is checked against: llama-cpp-python's high-level
`Llama(lora_path=...)` in a subprocess, under the settings that make faisca's numbers batch-invariant
(src/faisca/engine/batch_invariance.py), set here by hand so that nothing of faisca's is used.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import gguf
import numpy as np

ADAPTED = ("attn_q", "attn_v", "ffn_down")  # one before the q-norm, one straight into attention's output, one MLP


@functools.lru_cache(maxsize=4)
def _matrix_shapes(base_gguf: Path) -> dict[str, tuple[int, int]]:
    """ggml shapes [n_in, n_out] of the base's 2-D weights, by name. Once per file: GGUFReader parses the whole
    vocabulary in Python (~10 s for Gemma 3's 262k tokens on this box)."""
    return {t.name: (int(t.shape[0]), int(t.shape[1])) for t in gguf.GGUFReader(base_gguf).tensors
            if len(t.shape) == 2}


def _write(path: Path, arch: str, pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], alpha: float) -> Path:
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, a, b in pairs:
        writer.add_tensor(f"{name}.lora_a", a)
        writer.add_tensor(f"{name}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _random_pairs(base_gguf: Path, rank: int, seed: int, scale_of_b: float,
                  layers: Iterable[int] | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    shapes = _matrix_shapes(base_gguf)
    num_layers = 1 + max(int(name.split(".")[1]) for name in shapes if name.startswith("blk."))
    rng = np.random.default_rng(seed)
    pairs = []
    for layer in range(num_layers) if layers is None else layers:
        for weight in ADAPTED:
            name = f"blk.{layer}.{weight}.weight"
            n_in, n_out = shapes[name]
            # A keeps the input's scale (unit-variance rows over sqrt(n_in)), so B alone sets the adapter's strength
            a = rng.standard_normal((rank, n_in), dtype=np.float32) / np.float32(np.sqrt(n_in))
            b = rng.standard_normal((n_out, rank), dtype=np.float32) * np.float32(scale_of_b)
            pairs.append((name, a, b))
    return pairs


def write_tiny_gemma3_lora(path: Path, *, base_gguf: Path, rank: int = 4, seed: int = 0, scale_of_b: float = 0.05,
                           layers: Iterable[int] | None = None) -> Path:
    """A random LoRA adapter of `rank` for `base_gguf` (Gemma 3) on attn_q, attn_v and ffn_down of `layers` (all by
    default). alpha = rank, so llama.cpp's alpha / rank factor is 1 and a request's scale multiplies B @ A as is."""
    return _write(path, "gemma3", _random_pairs(base_gguf, rank, seed, scale_of_b, layers), alpha=float(rank))


def write_mismatched_lora(path: Path, *, base_gguf: Path, kind: str, rank: int = 4) -> Path:
    """An adapter llama.cpp must refuse for `base_gguf`: `kind` "shape" (lora_a one column too wide), "arch" (written
    for llama) or "tensor" (adapts a weight the base does not have). Each is well-formed GGUF: only the match fails."""
    pairs = _random_pairs(base_gguf, rank, seed=0, scale_of_b=0.5, layers=[0])
    arch = "llama" if kind == "arch" else "gemma3"
    if kind == "shape":
        name, a, b = pairs[0]
        pairs[0] = (name, np.zeros((rank, a.shape[1] + 1), dtype=np.float32), b)
    elif kind == "tensor":
        name, a, b = pairs[0]
        pairs[0] = (name.replace("blk.0.", "blk.999."), a, b)
    elif kind != "arch":
        raise ValueError(f"unknown kind {kind!r}: shape, arch or tensor")
    return _write(path, arch, pairs, alpha=float(rank))


def reference_greedy(base_gguf: Path, lora_path: Path | None, prompt_tokens: list[int], n: int,
                     scale: float = 1.0, num_threads: int = 2) -> list[int]:
    """`n` greedy token ids after `prompt_tokens` from llama.cpp itself (`Llama(lora_path=..., lora_scale=scale)`).

    In a subprocess: the patched default parameters, ggml's once-read tiled-matmul switch and a second copy of the
    model stay out of the caller's process."""
    job = {"base_gguf": str(base_gguf), "lora_path": None if lora_path is None else str(lora_path),
           "prompt_tokens": list(prompt_tokens), "n": n, "scale": scale, "num_threads": num_threads}
    env = {**os.environ, "GGML_CPU_TILED_MM": "0"}  # before ggml's first matmul, as faisca sets it
    done = subprocess.run([sys.executable, "-c", "import tests.lora as m; m._reference_main()"],
                          input=json.dumps(job), capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reference_main() -> None:
    import llama_cpp

    job = json.loads(sys.stdin.read())
    make_model_params = llama_cpp.llama_cpp.llama_model_default_params

    def model_params_without_extra_bufts() -> object:
        # AMX/repacked weights crash the first decode on this Xeon and round differently by batch; `Llama` has no
        # argument for them, so its defaults are patched (it reads them through this module attribute)
        params = make_model_params()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama_cpp.llama_model_default_params = model_params_without_extra_bufts
    prompt, n = job["prompt_tokens"], job["n"]
    llm = llama_cpp.Llama(model_path=job["base_gguf"], lora_path=job["lora_path"], lora_scale=job["scale"],
                          n_ctx=len(prompt) + n + 1, n_batch=512, n_ubatch=512, n_threads=job["num_threads"],
                          n_threads_batch=job["num_threads"], flash_attn=True, swa_full=True,
                          type_k=llama_cpp.GGML_TYPE_F16, type_v=llama_cpp.GGML_TYPE_Q8_0, verbose=False)
    tokens: list[int] = []
    llm.eval(prompt)
    while True:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        if not np.isfinite(logits).all():
            raise SystemExit(f"non-finite logits after {len(tokens)} tokens")
        tokens.append(int(np.argmax(logits)))
        if len(tokens) == n:
            break
        llm.eval(tokens[-1:])
    llm.close()
    print(json.dumps(tokens))
