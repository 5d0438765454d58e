"""llama.cpp settings under which a token's numbers do not depend on the batch it is computed in.

Temperature 0 must give the same text for the same request whether its prompt is computed cold, comes from the
prefix cache, or is batched beside other requests. On the CPU, ggml picks a kernel for each operation by the number
of rows (tokens) in the micro-batch, and the kernels round differently, so the same token computed in batches of
different shapes gets logits that differ by up to ~2.6 (bench/greedy_invariance.py and bench/first_divergence.py
measure it; bench/RESULTS.md has the numbers):

- Weights in "extra buffer types" (repacked for AVX2/AVX-512 and multiplied in groups of 4 rows with the remainder
  row by row, or repacked for AMX) round differently by row group. Off (`use_extra_bufts`). On a CPU with AMX the
  AMX path also crashed llama_decode here, which this avoids.
- ggml's tiled K-quant matmul (Q4_K, Q6_K... weights) takes batches of 8 rows or more, the dot-product kernel the
  others: off (`GGML_CPU_TILED_MM=0`, read by ggml once per process). llamafile's tinyBLAS, which takes the Q8_0 and
  Q5_0 weights for batches of 2 rows or more, gave the same bits as the dot-product kernel and stays on.
- Flash attention has three paths: one query row at a time (each row over its own KV cells in cell order, masked
  cells skipped), a tiled one for micro-batches of 64 rows or more, and, for a lone row attending 512 cells or more,
  one that splits the cells across threads. The last two need K and V of one type, so a V cache in Q8_0 (K stays
  F16) keeps every row on the first: its result no longer depends on the rows beside it, on how many cells are
  attended, or on where other sequences' cells lie. (An F32 V cache would not do: llama.cpp casts it to F16 for flash
  attention.) Flash attention is asked for explicitly: without it, attention's dot products run over all attended
  cells in SIMD lanes set by each cell's index, so a token's result depends on where its cells lie.

What stays: the row-at-a-time attention visits a sequence's cells in cell order, so a sequence whose later tokens
were placed in cells before its earlier ones (llama.cpp fills freed cells from the start of the cache; cells are
freed when cached prefixes are dropped or a sequence is preempted) rounds differently. See README "Reproducibility".
"""

from __future__ import annotations

import os

TILED_MATMUL_ENV = "GGML_CPU_TILED_MM"


def make_batch_invariant(model_params: object, context_params: object) -> None:
    """Set llama.cpp's model and context parameters (ctypes structs) for batch-invariant results, and switch off
    ggml's tiled matmul for this process (before its first matmul: ggml reads the switch once)."""
    import llama_cpp

    model_params.use_extra_bufts = False  # type: ignore[attr-defined]
    context_params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED  # type: ignore[attr-defined]
    context_params.type_k = llama_cpp.GGML_TYPE_F16  # type: ignore[attr-defined]
    context_params.type_v = llama_cpp.GGML_TYPE_Q8_0  # type: ignore[attr-defined]
    os.environ[TILED_MATMUL_ENV] = "0"
