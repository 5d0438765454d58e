"""Random Gemma 3 vision projectors ("mmproj" GGUF), written with the `gguf` package.

No vision weights are reachable from here, so the image tests make some: the SigLIP-style encoder Gemma 3 uses
(projector type gemma3), by default tiny: 224 px images in 14 px patches (16x16), 64 wide, 2 layers, average-pooled
4x4 and projected to 640 = Gemma 3 270M's width, so each image is 16 tokens. Every path llama.cpp takes with real
Gemma 3 vision weights is taken; only the numbers are meaningless (< 1 MB). `GEMMA3_SIGLIP` gives the real
encoder's shape (bench/vision.py times it): 896 px, 1152 wide, 27 layers, 256 tokens per image.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

TEXT_WIDTH = 640  # Gemma 3 270M's embedding width
IMAGE_PX = 224
PATCH_PX = 14
POOLED_SIDE = 4  # Gemma 3 pools each side of the patch grid by 4
TOKENS_PER_IMAGE = (IMAGE_PX // PATCH_PX // POOLED_SIDE) ** 2  # 16

# The vision tower of every Gemma 3 size from 4B up (SigLIP So400m at 896 px), as its mmproj files have it.
GEMMA3_SIGLIP = {"width": 1152, "num_layers": 27, "num_heads": 16, "ffn_width": 4304, "image_px": 896,
                 "matrix_type": np.float16}


def write_tiny_gemma3_projector(path: Path, *, width: int = 64, num_layers: int = 2, num_heads: int = 4,
                                ffn_width: int = 128, image_px: int = IMAGE_PX, matrix_type: type = np.float32,
                                seed: int = 0) -> Path:
    """A random Gemma 3 projector for Gemma 3 270M (tiny unless told otherwise; `matrix_type` for its matrices)."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch="clip")
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", ffn_width)
    writer.add_uint32("clip.vision.block_count", num_layers)
    writer.add_uint32("clip.vision.projection_dim", TEXT_WIDTH)
    writer.add_uint32("clip.vision.attention.head_count", num_heads)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.image_size", image_px)
    writer.add_uint32("clip.vision.patch_size", PATCH_PX)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def random(name: str, *shape: int) -> None:  # numpy shapes: ggml's dimensions reversed
        # llama.cpp adds the position embeddings to f32 activations: they stay f32, as in converted files
        dtype = matrix_type if len(shape) > 1 and "position" not in name else np.float32
        writer.add_tensor(name, (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype))

    def ones(name: str, size: int) -> None:
        writer.add_tensor(name, np.ones(size, dtype=np.float32))

    random("v.patch_embd.weight", width, 3, PATCH_PX, PATCH_PX)
    random("v.patch_embd.bias", width)
    random("v.position_embd.weight", (image_px // PATCH_PX) ** 2, width)
    for layer in range(num_layers):
        block = f"v.blk.{layer}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            random(f"{block}.{name}.weight", width, width)
            random(f"{block}.{name}.bias", width)
        for norm in ("ln1", "ln2"):
            ones(f"{block}.{norm}.weight", width)
            random(f"{block}.{norm}.bias", width)
        random(f"{block}.ffn_up.weight", ffn_width, width)
        random(f"{block}.ffn_up.bias", ffn_width)
        random(f"{block}.ffn_down.weight", width, ffn_width)
        random(f"{block}.ffn_down.bias", width)
    ones("v.post_ln.weight", width)
    random("v.post_ln.bias", width)
    ones("mm.soft_emb_norm.weight", width)
    random("mm.input_projection.weight", width, TEXT_WIDTH)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
