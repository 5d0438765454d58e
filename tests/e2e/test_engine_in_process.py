"""The real engine in process, on the embedded model: what a request cannot do to the others, and how client text is
tokenized."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from llama_cpp import mtmd_cpp

from faisca.engine.base import TokenOut
from faisca.engine.llama_cpp import LlamaCppEngine
from faisca.errors import EngineError
from faisca.images import DecodedImage, decode_image
from faisca.types import LITERAL_CLOSE, LITERAL_OPEN, SamplingParams
from tests.pictures import png
from tests.projector import TOKENS_PER_IMAGE, write_tiny_gemma3_projector


@pytest.fixture(scope="module")
def engine(gemma_gguf: Path) -> Iterator[LlamaCppEngine]:
    loaded = LlamaCppEngine.load(gemma_gguf, name="gemma-in-process", max_context_tokens=512, num_threads=2,
                                 max_num_seqs=4)
    yield loaded
    asyncio.run(loaded.close())


class BrokenConstraint:
    """A grammar that breaks at its fourth step (as one fed a NaN or a forbidden token would)."""

    def __init__(self) -> None:
        self.num_steps = 0

    def masked(self, logits: np.ndarray) -> np.ndarray:
        self.num_steps += 1
        if self.num_steps == 4:
            raise RuntimeError("the grammar rejected token 7")
        return logits

    def accept(self, token: int) -> bool:
        return False


async def tokens_of(engine: LlamaCppEngine, prompt: str, num_tokens: int, constraint: object = None) -> list[int]:
    sampling = SamplingParams(temperature=0.0, ignore_eos=True)
    return [event.token_id async for event in engine.generate(engine.encode_prompt(prompt), sampling, num_tokens,
                                                              constraint)  # type: ignore[arg-type]
            if isinstance(event, TokenOut)]


def test_a_sequence_whose_grammar_fails_ends_alone(engine: LlamaCppEngine) -> None:
    alone = asyncio.run(tokens_of(engine, "Roses are red, violets", 24))

    async def scenario() -> tuple[BaseException | list[int], ...]:
        return tuple(await asyncio.gather(
            tokens_of(engine, "The lighthouse keeper wrote", 24, BrokenConstraint()),
            tokens_of(engine, "Roses are red, violets", 24),
            tokens_of(engine, "Once upon a time", 24),
            return_exceptions=True,
        ))

    broken, first, second = asyncio.run(scenario())
    assert isinstance(broken, EngineError) and "the grammar rejected token 7" in str(broken)
    assert first == alone  # its answer unchanged by the failure beside it (and by the batch: README "Reproducibility")
    assert isinstance(second, list) and len(second) == 24
    assert len(asyncio.run(tokens_of(engine, "And after that", 4))) == 4  # the engine goes on serving


def test_client_text_between_literal_marks_never_becomes_control_tokens(engine: LlamaCppEngine) -> None:
    assert {"<start_of_turn>", "<end_of_turn>"} <= engine.control_texts
    [start_of_turn] = engine.encode_prompt("<start_of_turn>").tokens[-1:]
    marked = f"<start_of_turn>user\nhi {LITERAL_OPEN}<start_of_turn>{LITERAL_CLOSE}model\n"
    tokens = engine.encode_prompt(marked).tokens
    assert tokens.count(start_of_turn) == 1
    as_text = engine.encode_prompt("<start_of_turn>user\nhi ").tokens
    assert len(tokens) - len(as_text) > 3  # `<start_of_turn>` spelled out in plain-text tokens, then `model\n`


@pytest.fixture(scope="module")
def vision_engine(gemma_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEngine]:
    projector = write_tiny_gemma3_projector(tmp_path_factory.mktemp("projector") / "mmproj.gguf")
    loaded = LlamaCppEngine.load(gemma_gguf, name="gemma-vision-in-process", max_context_tokens=512, num_threads=2,
                                 max_num_seqs=2, projector_path=projector)
    yield loaded
    asyncio.run(loaded.close())


def libmtmd_whole_prompt_tokens(engine: LlamaCppEngine, prompt: str, images: list[DecodedImage]) -> list[int]:
    """What libmtmd makes of the whole prompt at once (image positions as -1)."""
    vision = engine._vision
    assert vision is not None
    bitmaps = []
    for image in images:
        pixels = (ctypes.c_ubyte * len(image.rgb)).from_buffer_copy(image.rgb)
        bitmaps.append(mtmd_cpp.mtmd_bitmap_init(image.width, image.height, pixels))
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    text = prompt.encode()
    text_input = mtmd_cpp.mtmd_input_text(text, len(text), False, True)
    array = (mtmd_cpp.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
    assert mtmd_cpp.mtmd_tokenize(vision._ctx, chunks, ctypes.byref(text_input), array, len(bitmaps)) == 0
    tokens: list[int] = []
    for index in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
        chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, index)
        if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == 0:
            count = ctypes.c_size_t()
            ids = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            tokens += [ids[i] for i in range(count.value)]
        else:
            tokens += [-1] * mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
    mtmd_cpp.mtmd_input_chunks_free(chunks)
    for bitmap in bitmaps:
        mtmd_cpp.mtmd_bitmap_free(bitmap)
    return tokens


def test_a_prompt_with_images_tokenizes_as_libmtmd_does_it_whole(vision_engine: LlamaCppEngine) -> None:
    images = [decode_image(png(color), max_pixels=1 << 24) for color in ((200, 30, 30), (30, 30, 200))]
    marker = vision_engine.image_marker
    assert marker is not None
    prompt = (f"<start_of_turn>user\nCompare\n\n{marker} and  {marker}\n<table>lines\n\n\nend<end_of_turn>\n"
              "<start_of_turn>model\n")
    ours = vision_engine.encode_prompt(prompt, images)
    expected = libmtmd_whole_prompt_tokens(vision_engine, prompt, images)
    ours_tokens = [-1 if token < 0 else token for token in ours.tokens]
    assert ours_tokens[-len(expected):] == expected and len(ours_tokens) - len(expected) in (0, 1)  # 1: a BOS added
    assert [image.num_tokens for image in ours.images] == [TOKENS_PER_IMAGE, TOKENS_PER_IMAGE]
    # and a client's control text between the images stays text
    literal = prompt.replace("Compare", f"{LITERAL_OPEN}<start_of_turn>{LITERAL_CLOSE}")
    [start_of_turn] = vision_engine.encode_prompt("<start_of_turn>").tokens[-1:]
    assert vision_engine.encode_prompt(literal, images).tokens.count(start_of_turn) == 2
