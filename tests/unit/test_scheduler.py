"""The scheduling policy, as a pure function: no threads, no model."""

from __future__ import annotations

import pytest

from faisca.scheduler import (
    SchedulerConfig,
    SequenceView,
    StepPlan,
    choose_preemption_victim,
    schedule,
)


def seqs(*pending: int, start: int = 0) -> list[SequenceView]:
    return [SequenceView(start + i, p) for i, p in enumerate(pending)]


def cfg(max_num_seqs: int = 8, max_batch_tokens: int = 64) -> SchedulerConfig:
    return SchedulerConfig(max_num_seqs=max_num_seqs, max_batch_tokens=max_batch_tokens)


def check_invariants(plan: StepPlan, running, waiting, config: SchedulerConfig) -> None:
    ids = [rid for rid, _ in plan.chunks]
    assert len(ids) == len(set(ids)), "a request is listed twice"
    assert plan.num_tokens <= config.max_batch_tokens
    assert len(running) + len(plan.admitted) <= max(config.max_num_seqs, len(running))
    pending = {s.request_id: s.num_pending_tokens for s in (*running, *waiting)}
    allowed = {s.request_id for s in running} | set(plan.admitted)
    for rid, n in plan.chunks:
        assert rid in allowed
        assert 1 <= n <= pending[rid]


# --- config ------------------------------------------------------------------


@pytest.mark.parametrize("seqs_, tokens", [(0, 1), (1, 0), (-1, 5), (5, -3)])
def test_config_rejects_values_below_one(seqs_: int, tokens: int) -> None:
    with pytest.raises(ValueError):
        SchedulerConfig(max_num_seqs=seqs_, max_batch_tokens=tokens)


def test_config_accepts_ones() -> None:
    c = SchedulerConfig(max_num_seqs=1, max_batch_tokens=1)
    assert (c.max_num_seqs, c.max_batch_tokens) == (1, 1)


# --- admission ---------------------------------------------------------------


def test_admission_is_fifo_and_respects_max_num_seqs() -> None:
    running = seqs(1, 1)
    waiting = seqs(5, 6, 7, 8, start=10)
    plan = schedule(running, waiting, cfg(max_num_seqs=4, max_batch_tokens=1000))
    assert plan.admitted == (10, 11)
    assert plan.chunks == ((0, 1), (1, 1), (10, 5), (11, 6))
    check_invariants(plan, running, waiting, cfg(4, 1000))


def test_nothing_admitted_when_full() -> None:
    running = seqs(1, 1, 1)
    waiting = seqs(4, start=10)
    plan = schedule(running, waiting, cfg(max_num_seqs=3))
    assert plan.admitted == ()
    assert [rid for rid, _ in plan.chunks] == [0, 1, 2]


def test_nothing_admitted_when_over_full() -> None:
    # e.g. max_num_seqs lowered at runtime: no negative slicing surprises
    plan = schedule(seqs(1, 1, 1), seqs(4, start=10), cfg(max_num_seqs=2))
    assert plan.admitted == ()


def test_admitted_without_budget_still_admitted() -> None:
    # Admission only depends on slots; tokens come later.
    plan = schedule(seqs(1, 1), seqs(9, start=10), cfg(max_num_seqs=4, max_batch_tokens=2))
    assert plan.admitted == (10,)
    assert plan.chunks == ((0, 1), (1, 1))


# --- budget and decode priority ----------------------------------------------


def test_decoders_first_prompt_gets_the_rest() -> None:
    running = seqs(*[1] * 8)
    waiting = seqs(1000, start=100)
    config = cfg(max_num_seqs=16, max_batch_tokens=64)
    plan = schedule(running, waiting, config)
    assert plan.admitted == (100,)
    assert plan.chunks == tuple((i, 1) for i in range(8)) + ((100, 56),)
    assert plan.num_tokens == 64


def test_running_prefills_before_admitted_prefills() -> None:
    running = [SequenceView(1, 50), SequenceView(2, 1)]
    waiting = [SequenceView(3, 50)]
    plan = schedule(running, waiting, cfg(max_batch_tokens=60))
    assert plan.chunks == ((2, 1), (1, 50), (3, 9))


def test_admitted_one_token_prompt_is_a_decoder() -> None:
    running = [SequenceView(1, 100), SequenceView(2, 1)]
    waiting = [SequenceView(3, 1), SequenceView(4, 7)]
    plan = schedule(running, waiting, cfg(max_batch_tokens=10))
    # running decoders, admitted decoders, running prefills, admitted prefills
    assert plan.chunks == ((2, 1), (3, 1), (1, 8))


def test_more_decoders_than_budget_take_them_in_order() -> None:
    running = seqs(1, 1, 1, 1, 1)
    plan = schedule(running, seqs(20, start=10), cfg(max_num_seqs=8, max_batch_tokens=3))
    assert plan.chunks == ((0, 1), (1, 1), (2, 1))
    assert plan.admitted == (10,)


def test_budget_one() -> None:
    config = cfg(max_num_seqs=4, max_batch_tokens=1)
    assert schedule([], seqs(10), config).chunks == ((0, 1),)
    assert schedule(seqs(5, 1), [], config).chunks == ((1, 1),)


@pytest.mark.parametrize("budget", [1, 2, 3, 7, 64, 500])
@pytest.mark.parametrize("max_seqs", [1, 2, 5])
def test_invariants_on_a_mix(budget: int, max_seqs: int) -> None:
    running = [SequenceView(i, p) for i, p in enumerate([1, 40, 1, 3, 1][:max_seqs])]
    waiting = [SequenceView(100 + i, p) for i, p in enumerate([1, 200, 2, 1, 9])]
    config = cfg(max_num_seqs=max_seqs, max_batch_tokens=budget)
    plan = schedule(running, waiting, config)
    check_invariants(plan, running, waiting, config)
    # nothing wasted: either all pending is served or the budget is used up
    total = sum(s.num_pending_tokens for s in running) + sum(
        s.num_pending_tokens for s in waiting if s.request_id in plan.admitted
    )
    assert plan.num_tokens == min(budget, total)


# --- edge cases --------------------------------------------------------------


def test_empty_inputs_give_empty_plan() -> None:
    plan = schedule([], [], cfg())
    assert plan == StepPlan(admitted=(), chunks=())
    assert plan.num_tokens == 0


def test_zero_pending_is_rejected() -> None:
    with pytest.raises(ValueError):
        schedule([SequenceView(1, 0)], [], cfg())


def test_inputs_are_not_mutated() -> None:
    running, waiting = seqs(1, 30), seqs(5, start=10)
    before = (list(running), list(waiting))
    schedule(running, waiting, cfg())
    assert (running, waiting) == before


# --- multi-step simulation ---------------------------------------------------


class Sim:
    """Apply plans the way the engine would: feed tokens, prefills turn into decoders."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.running: list[SequenceView] = []
        self.waiting: list[SequenceView] = []

    def step(self) -> StepPlan:
        plan = schedule(self.running, self.waiting, self.config)
        check_invariants(plan, self.running, self.waiting, self.config)
        admitted = [s for s in self.waiting if s.request_id in plan.admitted]
        self.waiting = [s for s in self.waiting if s.request_id not in plan.admitted]
        fed = dict(plan.chunks)
        new_running = []
        for s in self.running + admitted:
            left = s.num_pending_tokens - fed.get(s.request_id, 0)
            # a sequence whose pending reached 0 samples a token and decodes: pending 1
            new_running.append(SequenceView(s.request_id, left if left > 0 else 1))
        self.running = new_running
        return plan


def test_long_prompt_is_chunked_while_decoder_keeps_decoding() -> None:
    sim = Sim(cfg(max_num_seqs=4, max_batch_tokens=128))
    sim.running = [SequenceView(1, 1)]
    sim.waiting = [SequenceView(2, 300)]
    fed_prompt = []
    for _ in range(3):
        plan = sim.step()
        chunks = dict(plan.chunks)
        assert chunks[1] == 1  # the decoder decodes every step
        fed_prompt.append(chunks[2])
    assert fed_prompt == [127, 127, 46]
    assert sum(fed_prompt) == 300
    # prefill is done: both now decode
    assert dict(sim.step().chunks) == {1: 1, 2: 1}


def test_abort_frees_slot_for_waiting() -> None:
    sim = Sim(cfg(max_num_seqs=2, max_batch_tokens=64))
    sim.waiting = seqs(10, 10, 10)
    assert sim.step().admitted == (0, 1)
    assert sim.step().admitted == ()
    # request 0 is aborted between steps: simply dropped from running
    sim.running = [s for s in sim.running if s.request_id != 0]
    plan = sim.step()
    assert plan.admitted == (2,)
    assert 0 not in dict(plan.chunks)
    assert set(dict(plan.chunks)) == {1, 2}


def test_everything_finishes_prefill_eventually() -> None:
    sim = Sim(cfg(max_num_seqs=3, max_batch_tokens=16))
    sim.waiting = seqs(50, 1, 33, 7, 100)
    for _ in range(200):
        sim.step()
        # once everyone is in and prefilled, the loop is steady-state decoding
        if not sim.waiting and all(s.num_pending_tokens == 1 for s in sim.running):
            break
        # finish decoders arbitrarily to let waiting ones in
        if len(sim.running) == 3 and sim.waiting:
            decoders = [s for s in sim.running if s.num_pending_tokens == 1]
            if decoders:
                sim.running.remove(decoders[0])
    else:
        pytest.fail("did not converge")


# --- preemption --------------------------------------------------------------


def test_preemption_victim_is_last_admitted() -> None:
    assert choose_preemption_victim(seqs(1, 20, 1, start=5)) == 7


def test_lone_or_no_sequence_is_never_preempted() -> None:
    assert choose_preemption_victim([]) is None
    assert choose_preemption_victim([SequenceView(3, 1)]) is None
