"""Loss terms that break on purpose at chosen training steps (for the non-finite tests)."""

from __future__ import annotations

import torch

from mmae.core.objectives import LossTerm, Step, TermValue


class NonFiniteAt(LossTerm):
    """Zero on the graph, except at `steps`: a NaN value (`kind="value"`) or a finite value
    whose gradient is infinite (`kind="gradient"`, d sqrt(u)/du at u=0)."""

    def __init__(self, steps: list[int], kind: str = "value"):
        self.steps, self.kind = set(steps), kind

    def __call__(self, step: Step) -> TermValue:
        offset = step.output.code - step.output.code.detach()  # exactly 0, on the graph
        if step.global_step not in self.steps:
            return TermValue(0.0 * offset.sum())  # (offset.sum() alone has a gradient of ones)
        if self.kind == "value":
            return TermValue(offset.sum() + float("nan"), {"poison": torch.tensor(float("nan"))})
        return TermValue(torch.sqrt(offset).sum())
