"""What a sequence with images asks of a step's batch (the scheduler budgets batch tokens by it)."""

from __future__ import annotations

from faisca.engine.base import PromptImage
from faisca.engine.llama_cpp import IncrementalDetokenizer, _Sequence
from faisca.engine.sampling import TokenSampler
from faisca.types import SamplingParams


def sequence_with_an_image() -> _Sequence:
    # 3 text tokens, an image of 4 positions (placeholders), 3 text tokens
    tokens = [10, 11, 12, -5, -5, -5, -5, 13, 14, 15]
    return _Sequence(request_id=1, tokens=tokens, num_prompt_tokens=len(tokens), max_new_tokens=4,
                     sampler=TokenSampler(SamplingParams(), prompt_tokens=tokens),
                     detokenizer=IncrementalDetokenizer(lambda token: b""), emit=lambda event: None,
                     images=(PromptImage(start=3, num_tokens=4, digest="1x1:00", chunk=None),))


def test_a_sequence_asks_for_its_text_up_to_the_next_image_and_one_token_of_room_at_an_image() -> None:
    sequence = sequence_with_an_image()
    assert sequence.view().num_pending_tokens == 3  # not 10: the image is not fed in the batch
    sequence.num_computed = 3
    assert sequence.view().num_pending_tokens == 1  # at the image: encoded and fed apart from the batch
    sequence.num_computed = 7
    assert sequence.view().num_pending_tokens == 3
    sequence.tokens.append(42)  # a sampled token
    sequence.num_computed = 10
    assert sequence.view().num_pending_tokens == 1
