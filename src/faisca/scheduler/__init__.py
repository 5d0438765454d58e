"""Continuous-batching scheduler: the pure per-step decision of who runs (see `policy`)."""

from faisca.scheduler.policy import (
    SchedulerConfig,
    SequenceView,
    StepPlan,
    choose_preemption_victim,
    pick_group,
    schedule,
)

__all__ = [
    "SchedulerConfig",
    "SequenceView",
    "StepPlan",
    "choose_preemption_victim",
    "pick_group",
    "schedule",
]
