"""Finding a loss or gradient that went NaN or infinite before it reaches the weights.

`training.on_nonfinite` chooses what happens then (`NonfiniteGuard`, a callback the module
brings): `raise` stops training with a message naming the step, the batch and the loss term or
parameter (the checkpoints on disk are those of the last good epoch), `skip` drops that
optimizer step and counts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from mmae.core.errors import ConfigError, TrainingError
from mmae.training.ranks import on_any_rank

POLICIES = ("raise", "skip")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigError(f"training.on_nonfinite must be one of {', '.join(POLICIES)}, got '{policy}'")
    return policy


def is_finite(value: Tensor) -> bool:
    """One host sync for the whole tensor."""
    return bool(torch.isfinite(value).all())


def nonfinite_terms(logged: Mapping[str, Tensor]) -> list[str]:
    """`name=value` of every non-finite logged loss, per-modality parts before whole terms
    (the most specific culprit first) and the total last."""
    bad = [(name, value) for name, value in logged.items() if not is_finite(value)]
    bad.sort(key=lambda item: (item[0] == "loss", item[0].startswith("loss/")))
    return [f"{name}={value.item() if value.numel() == 1 else 'non-finite'}" for name, value in bad]


def nonfinite_gradients(parameters: Iterable[tuple[str, nn.Parameter]]) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or an infinity.

    The common case (all finite) costs one fused norm and one host sync; a norm that is not
    finite is confirmed element-wise (huge but finite gradients can overflow a norm)."""
    named = [(name, p.grad) for name, p in parameters if p.grad is not None]
    if not named:
        return []
    norms = torch._foreach_norm([grad for _, grad in named])
    if is_finite(torch.stack(norms)):
        return []
    return [name for (name, grad), norm in zip(named, norms, strict=True)
            if not is_finite(norm) and not is_finite(grad)]


def first_few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class NonfiniteGuard(Callback):
    """Keeps a NaN or infinite loss or gradient from reaching the weights.

    The module reports a non-finite loss (`reject_loss`) and trains on a zero loss instead;
    before each optimizer step every rank learns whether any rank saw a non-finite loss or
    gradient. `policy="raise"` then stops with the step, batch and term or parameter;
    `"skip"` drops the step on every rank and counts it (`train/nonfinite_skipped`, kept in
    the checkpoint as `mmae_nonfinite_skipped`)."""

    WARN_SKIPS = 5  # skips warned about one by one; later ones are only counted

    def __init__(self, policy: str = "raise"):
        self.policy = check_policy(policy)
        self.skipped = 0
        self._loss_problem: str | None = None  # what went wrong in this step's batches
        self._batch_idx = 0

    def reject_loss(self, logged: Mapping[str, Tensor], epoch: int, batch_idx: int) -> None:
        """Record a non-finite loss: acted on at the optimizer step, with every DDP rank."""
        self._loss_problem = (f"non-finite loss {first_few(nonfinite_terms(logged))} "
                              f"(epoch {epoch}, batch {batch_idx})")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch_idx = batch_idx  # named if this step's gradients turn out non-finite

    def on_before_optimizer_step(self, trainer, pl_module, optimizer: torch.optim.Optimizer) -> None:
        problem, self._loss_problem = self._loss_problem, None
        if problem is None and getattr(trainer.precision_plugin, "scaler", None) is None:
            # (With fp16 loss scaling, overflowing gradients are the scaler's to skip.)
            bad = nonfinite_gradients(pl_module.named_parameters())
            if bad:
                problem = (f"non-finite gradient of {first_few(bad)} "
                           f"(epoch {trainer.current_epoch}, batch {self._batch_idx})")
        if not on_any_rank(trainer, problem is not None, pl_module.device):
            return
        problem = f"step {trainer.global_step}: {problem or 'a non-finite loss or gradient on another rank'}"
        if self.policy == "raise":
            saved = trainer.checkpoint_callback
            raise TrainingError(
                f"{problem}. Nothing of this step reached the weights"
                + (f"; {saved.dirpath} holds the last good checkpoints" if saved else "")
                + ". Lower the learning rate, clip gradients (trainer.gradient_clip_val=1.0) or check "
                "the data; training.on_nonfinite=skip drops such steps instead.")
        optimizer.zero_grad(set_to_none=True)  # no gradient, no update (nor weight decay)
        self.skipped += 1
        if self.skipped <= self.WARN_SKIPS:
            later = "; later skips are only counted" if self.skipped == self.WARN_SKIPS else ""
            rank_zero_warn(f"skipped {problem} (on_nonfinite=skip; {self.skipped} so far{later})",
                           category=RuntimeWarning)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.policy == "skip":
            pl_module.log("train/nonfinite_skipped", float(self.skipped), reduce_fx="max")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["mmae_nonfinite_skipped"] = self.skipped

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.skipped = checkpoint.get("mmae_nonfinite_skipped", 0)
