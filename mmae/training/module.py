"""The LightningModule: training logic only. It holds a model; it builds no layers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from mmae.artifacts.export import describe
from mmae.core.corruption import NoCorruption
from mmae.core.model import MultimodalAutoencoder
from mmae.core.objectives import Objective, ReconstructionLoss, Step
from mmae.data.batch import Batch, as_batch, features_of
from mmae.data.feature_cache import FeatureCache, cacheable_preprocessors
from mmae.data.stem_cache import StemCache, cacheable_modalities
from mmae.evaluation.reconstruction import baseline_ratios, estimate_baselines, reconstruction_sums
from mmae.training.nonfinite import NonfiniteGuard, is_finite
from mmae.training.random_state import ResumableRandomState
from mmae.training.ranks import union_over_ranks
from mmae.version import __version__


def _warn_if_unregularized_overcomplete(model: MultimodalAutoencoder, objective: Objective,
                                        corruption: Callable | None) -> None:
    """An overcomplete code with nothing but reconstruction can learn the identity."""
    smallest = min(math.prod(m.shape) for m in model.modalities.values())
    plain = all(isinstance(t, ReconstructionLoss) for t in objective.terms.values())
    uncorrupted = corruption is None or isinstance(corruption, NoCorruption)
    if model.latent_dim >= smallest and not model.variational and plain and uncorrupted:
        warnings.warn(
            f"overcomplete code (latent_dim={model.latent_dim} >= {smallest} input elements) with "
            "no regularizer: it can copy its input; add a sparsity or contractive term, or a "
            "corruption", UserWarning, stacklevel=3)


class AutoencoderModule(pl.LightningModule):
    """Trains a `MultimodalAutoencoder` with a corruption (denoising) and an objective.

    The corruption only changes what the encoder sees; the objective always compares the
    reconstructions with the clean batch, on every modality present in it.

    Validation logs, per modality, the error from all inputs, from every leave-one-out
    subset, and of the training-mean baseline (estimated once from the training loader).

    It brings two callbacks of its own (`configure_callbacks`), so any Trainer that fits it
    has them: `NonfiniteGuard` (a NaN or infinite loss or gradient never reaches the weights:
    `on_nonfinite="raise"` stops, `"skip"` drops the step and counts it) and
    `ResumableRandomState` (a resumed run draws what an uninterrupted one would have).
    """

    def __init__(self, model: MultimodalAutoencoder, objective: Objective,
                 optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., object] | None = None,
                 corruption: Callable | None = None, config: dict | None = None,
                 baseline_batches: int = 100, on_nonfinite: str = "raise", cache_backbones: bool = True,
                 cache_features: bool = True):
        super().__init__()
        # Only primitives go into the checkpoint, so it loads with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["model", "objective", "optimizer", "scheduler", "corruption"])
        self.nonfinite = NonfiniteGuard(on_nonfinite)
        self.random_state = ResumableRandomState()
        objective.check(model)
        _warn_if_unregularized_overcomplete(model, objective, corruption)
        self.model = model
        self.objective = objective
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.corruption = corruption or NoCorruption()
        self.baseline_batches = baseline_batches
        self.baselines: dict[str, torch.Tensor] | None = None
        self._val_sums: dict[str, torch.Tensor] = {}
        self.cache_backbones = cache_backbones
        self.stems: StemCache | None = None  # frozen backbones' outputs, built at fit start
        self.cache_features = cache_features
        self.features: FeatureCache | None = None  # fixed preprocessors' outputs, built at fit start

    def _losses(self, batch: Batch, train: bool):
        stage = "train" if train else "val"
        precomputed = (self.features.lookup(self.model.encoder, batch, stage)
                       if self.features is not None and batch.index is not None else None)
        inputs, present, raw = features_of(self.model.encoder, batch, precomputed=precomputed)
        if self.stems is not None and batch.index is None:
            rank_zero_warn("the batches carry no sample 'index', which the frozen-backbone cache is keyed "
                           "by: backbones run on every batch (give each sample its index to cache them)")
            self.stems = None
        cached = (self.stems.lookup(self.model.encoder, batch, inputs, present, raw, stage)
                  if self.stems is not None else None)
        seen, seen_present = (self.corruption(inputs, present, modalities=self.model.modalities)
                              if train else (inputs, present))
        if train and self.objective.needs_input_grad:
            seen = {n: x.detach().requires_grad_(torch.is_floating_point(x)) for n, x in seen.items()}
        # Each modality's own code where an alignment term asks for it: wherever the clean batch
        # holds the modality, including where dropout hid it from the fusion.
        unimodal = present if self.objective.needs_unimodal_codes else None
        output = self.model(seen, seen_present, raw=raw, cached=cached, unimodal_present=unimodal)
        step = Step(self.model.modalities, output, inputs, present, inputs=seen,
                    global_step=self.global_step if train else None,
                    likelihoods=self.model.decoder.likelihoods, raw=raw, cached=cached)
        return self.objective(step, with_input_grad=train), step

    def _count_skipped(self, stage: str, batch: Batch) -> None:
        if "skipped" in batch.extras:  # samples a manifest with on_error=skip could not load
            self.log(f"{stage}/skipped_samples", batch.extras["skipped"].float(), reduce_fx="sum",
                     on_step=False, on_epoch=True, batch_size=1)

    def _zero_loss(self) -> torch.Tensor:
        # A zero loss on the graph rather than None: under DDP every rank must run backward.
        return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0

    def configure_callbacks(self) -> list[pl.Callback]:
        """The module's own callbacks, for any Trainer that fits it; none when this Trainer has
        them already (a validation after the fit), which Lightning would report as overriding."""
        trainer = self._trainer  # (the public `trainer` raises when not attached)
        if trainer is not None and any(c is self.nonfinite for c in trainer.callbacks):
            return []
        return [self.nonfinite, self.random_state]

    def training_step(self, batch: Batch | Mapping | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every sample of the batch was skipped
            return self._zero_loss()
        batch = as_batch(batch)
        self._count_skipped("train", batch)
        losses, step = self._losses(batch, train=True)
        if not is_finite(losses.total):  # the guard decides at the optimizer step, with every rank
            self.nonfinite.reject_loss(losses.logged, self.current_epoch, batch_idx)
            return self._zero_loss()
        batch_size = next(iter(step.targets.values())).shape[0]
        self._log_losses("train", losses.logged, batch_size)
        return losses.total

    def validation_step(self, batch: Batch | Mapping | None, batch_idx: int) -> None:
        if batch is None:
            return
        batch = as_batch(batch)
        self._count_skipped("val", batch)
        losses, step = self._losses(batch, train=False)
        batch_size = next(iter(step.targets.values())).shape[0]
        self._log_losses("val", losses.logged, batch_size)
        # The objective's forward pass on the clean batch doubles as the "from all" evaluation.
        sums = reconstruction_sums(self.model, step.targets, step.present, self.baselines, step.output,
                                   raw=step.raw, cached=step.cached)
        for name, (total, count) in sums.items():
            pair = torch.stack([total.double(), count.double()])
            self._val_sums[name] = self._val_sums[name] + pair if name in self._val_sums else pair

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def on_validation_epoch_end(self) -> None:
        """Log `val/<metric>` = sum / count over the whole validation set, on every rank.

        Summing before dividing weights every sample equally (batches differ in how many
        samples hold each modality), and gathering the metric names first keeps the ranks'
        collectives aligned even when one rank saw no sample of some modality.
        """
        # (`_trainer`: the public `trainer` raises when the module is not attached to one)
        names = sorted(union_over_ranks(self._trainer, self._val_sums))
        if not names:
            return
        zero = torch.zeros(2, dtype=torch.float64, device=self.device)
        pairs = torch.stack([self._val_sums.get(name, zero) for name in names])
        pairs = self.trainer.strategy.reduce(pairs, reduce_op="sum")
        values = {name: (total / count).float() for name, (total, count) in zip(names, pairs, strict=True)
                  if count > 0}
        for name, value in {**values, **baseline_ratios(values)}.items():
            # Already reduced; sync_dist only keeps Lightning from warning under DDP.
            self.log(f"val/{name}", value, sync_dist=True)

    def _log_losses(self, stage: str, logged: dict[str, torch.Tensor], batch_size: int) -> None:
        sync = stage != "train"  # epoch-level validation metrics are reduced across ranks
        for name, value in logged.items():
            if sync and not name.startswith("loss"):
                # Parts are masked means over a subset of the batch: batch-size weighting would
                # bias their epoch average. Validation reports them, weighted right, as val/<m>/*.
                continue
            self.log(f"{stage}/{name}", value, batch_size=batch_size, prog_bar=name == "loss",
                     sync_dist=sync)

    def on_validation_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.baselines is None and datamodule is not None:
            self.baselines = estimate_baselines(self.model, datamodule.train_dataloader(),
                                                self.baseline_batches)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mmae_version"] = __version__
        checkpoint["mmae_model"] = describe(self.model)  # rebuilds the model without the config
        checkpoint["mmae_baselines"] = self.baselines
        label_map = getattr(self._trainer and self.trainer.datamodule, "label_map", None)
        checkpoint["mmae_labels"] = label_map.to_json() if label_map is not None else None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.baselines = checkpoint.get("mmae_baselines")

    def on_fit_start(self) -> None:
        if any(getattr(e, "frozen", False) for e in self.model.encoder.encoders.values()):
            # Frozen backbones stay in eval mode on purpose (no dropout in a fixed feature
            # extractor); Lightning's start-of-fit warning about eval-mode modules means them.
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode",
                                    category=UserWarning)
        datamodule = getattr(self.trainer, "datamodule", None)
        if not hasattr(datamodule, "dataset"):  # samples are cached by their index in a split
            return
        size = getattr(datamodule, "split_size", lambda split: len(datamodule.dataset(split)))
        capacity = {stage: size(stage) for stage in ("train", "val")}
        cache_dir = getattr(datamodule, "cache_dir", None)
        preprocessed = cacheable_preprocessors(self.model.encoder) if self.cache_features else []
        if preprocessed and self.features is None:
            folder = Path(cache_dir) / "features" if cache_dir else None
            self.features = FeatureCache(preprocessed, capacity, folder)
        names = cacheable_modalities(self.model.encoder) if self.cache_backbones else []
        if not names or self.stems is not None:
            return
        self.stems = StemCache(names, capacity, Path(cache_dir) / "stems" if cache_dir else None)
        rank_zero_info(f"frozen backbones of {names} run once per sample: their outputs are cached, so "
                       "later epochs train only the heads (element noise does not reach these encoders; "
                       "modality dropout does). training.cache_backbones=false turns this off.")
