"""What every `mmae-eval` task shares: the run it measures (`EvalContext`, which encodes each
split once however many tasks read it), what a task gives back (`TaskResult`) and the base
class each task subclasses and registers in `mmae.core.registry.EVALUATIONS`.

A task is also a library call: `Cluster().run(EvalContext(encoder, datamodule))`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from mmae.artifacts.export import FrozenEncoder
from mmae.core.errors import ConfigError
from mmae.core.model import MultimodalAutoencoder
from mmae.evaluation.codes import Features, encode_batches
from mmae.evaluation.probes import input_features


@dataclass
class EvalContext:
    """A trained run and its data, as the tasks read them.

    `encoder`: the exported encoder (codes); `model`: the whole autoencoder (decoder too), or
    None when only an export was given; `datamodule`: the run's data (`train_dataloader`,
    `val_dataloader`, `test_dataloader`); `figures`: the directory for PNGs (None: draw none);
    `options`: the task's own settings (the `<task>:` section of `conf/evaluate.yaml`).
    """

    encoder: FrozenEncoder
    datamodule: Any
    model: MultimodalAutoencoder | None = None
    figures: Path | None = None
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    _codes: dict = field(default_factory=dict, repr=False)
    _inputs: dict = field(default_factory=dict, repr=False)

    def loader(self, split: str):
        if hasattr(self.datamodule, "require_split"):  # an empty split named, not met as "no sample"
            self.datamodule.require_split(split, "mmae-eval")
        return getattr(self.datamodule, f"{split}_dataloader")()

    def codes(self, split: str, modalities: Sequence[str] | None = None) -> Features:
        """Deterministic codes of a split (from all modalities, or from a subset), computed once."""
        key = (split, tuple(modalities) if modalities is not None else None)
        if key not in self._codes:
            self._codes[key] = encode_batches(self.encoder, self.loader(split), modalities)
        return self._codes[key]

    def inputs(self, split: str, modalities: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        """The split's preprocessed inputs (of all modalities, or of a subset) flattened side
        by side, with the labels (the raw-input baselines' view), computed once."""
        key = (split, tuple(modalities) if modalities is not None else None)
        if key not in self._inputs:
            self._inputs[key] = input_features(self.encoder, self.loader(split), modalities=modalities)
        return self._inputs[key]

    def figure(self, name: str) -> Path | None:
        """Where a task draws `name` (a PNG), or None when no figures are wanted."""
        return None if self.figures is None else self.figures / name

    def require_model(self, task: str) -> MultimodalAutoencoder:
        if self.model is None:
            raise ConfigError(f"task={task} needs the decoder: give run=DIR or checkpoint=FILE")
        return self.model


@dataclass
class TaskResult:
    """A task's outcome: `results` (JSON-able, written to `<task>.json`), `text` (the table it
    prints), `summary` (a few headline numbers, `name -> value`, for `task=all`'s one table)
    and the PNGs it drew."""

    results: dict
    text: str
    summary: dict[str, float | None] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)


class Evaluation:
    """One `mmae-eval` task. Subclasses set `needs_model` (the decoder), `needs_labels` and
    `options` (their settings' names -> types: the `<task>:` section of `conf/evaluate.yaml`,
    checked by the config schema), and implement `run`; `applies` says why a run cannot take
    the task (None: it can), which `task=all` uses to skip it with that reason."""

    needs_model: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}
    #: Where `task=all` runs and prints the task (then by name): mmae's own from 0, in the
    #: order a reader meets them; another task after them.
    order: ClassVar[int] = 100
    #: What names a task of the user's own (`mmae-eval task=my_pkg.MyTask`), which has no
    #: registered name: its config section (`+my_task.key=value`) and results (`my_task.json`).
    #: By default the class name in snake case.
    section: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "section" not in cls.__dict__:
            cls.section = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls.__name__).lower()

    def applies(self, context: EvalContext) -> str | None:
        if self.needs_model and context.model is None:
            return "needs the decoder: give run=DIR or checkpoint=FILE"
        if self.needs_labels and not bool((context.codes("test").labels >= 0).any()):
            return "needs labelled test samples"
        return None

    def run(self, context: EvalContext) -> TaskResult:
        raise NotImplementedError
