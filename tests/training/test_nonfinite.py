"""A NaN or infinite loss or gradient stops training with its step, batch and term, or is
skipped and counted with training.on_nonfinite=skip; it never reaches the weights."""

from __future__ import annotations

import csv
import json
import re

import pytest
import pytorch_lightning as pl
import torch

from mmae.artifacts.checkpoint import load_checkpoint_file
from mmae.cli.train import train
from mmae.config.assembly import build_module
from mmae.core.errors import ConfigError, TrainingError
from mmae.training.module import AutoencoderModule
from mmae.training.nonfinite import nonfinite_gradients, nonfinite_terms

BATCHES_PER_EPOCH = 8  # experiment=tiny: 256 training samples in batches of 32


def _fault(kind: str, steps: list[int]) -> list[str]:
    return ["+objective.terms.fault._target_=faulty_terms.NonFiniteAt",
            f"+objective.terms.fault.steps=[{','.join(map(str, steps))}]",
            f"+objective.terms.fault.kind={kind}"]


def _overrides(*extra: str) -> list[str]:
    return ["experiment=tiny", "logger=none", "progress_bar=none",
            "trainer.enable_model_summary=false", *extra]


def _weights(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint_file(path)["state_dict"].items() if v.is_floating_point()}


def test_the_culprit_is_named_most_specific_first():
    logged = {"loss": torch.tensor(float("nan")), "loss/recon": torch.tensor(float("inf")),
              "recon/image": torch.tensor(float("inf")), "recon/vector": torch.tensor(0.5)}
    assert nonfinite_terms(logged) == ["recon/image=inf", "loss/recon=inf", "loss=nan"]
    layer = torch.nn.Linear(2, 2)
    layer.weight.grad = torch.tensor([[1.0, float("nan")], [0.0, 0.0]])
    layer.bias.grad = torch.full((2,), 3e38)  # huge but finite: its norm overflows, it does not
    assert nonfinite_gradients(layer.named_parameters()) == ["weight"]


@pytest.mark.parametrize(("kind", "culprit"), [("value", "fault/poison=nan"),
                                                ("gradient", "non-finite gradient of model.")])
def test_training_stops_naming_step_batch_and_term_and_keeps_the_last_good_checkpoint(
        compose_cfg, tmp_path, kind, culprit):
    bad_step = BATCHES_PER_EPOCH + 3  # epoch 1, batch 3: epoch 0 ended with a checkpoint
    cfg = compose_cfg(*_overrides("trainer.max_epochs=3", *_fault(kind, [bad_step])))
    with pytest.raises(TrainingError) as caught:
        train(cfg)
    message = str(caught.value)
    assert message.startswith(f"step {bad_step}: ")
    assert culprit in message and "(epoch 1, batch 3)" in message
    assert "training.on_nonfinite=skip" in message and str(tmp_path / "checkpoints") in message
    last = load_checkpoint_file(tmp_path / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (0, BATCHES_PER_EPOCH)
    assert all(torch.isfinite(w).all() for w in _weights(tmp_path / "checkpoints" / "last.ckpt").values())
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["value", "gradient"])
def test_skip_drops_exactly_the_bad_steps_and_counts_them(compose_cfg, tmp_path, kind):
    bad_steps = [0, 5, 9, 15]
    cfg = compose_cfg(*_overrides("trainer.max_epochs=2", "training.on_nonfinite=skip", "logger=csv",
                                  *_fault(kind, bad_steps)))
    with pytest.warns(RuntimeWarning, match=r"skipped step 5: non-finite"):
        report, objects = train(cfg)
    assert report["nonfinite_skipped"] == len(bad_steps)
    assert json.loads((tmp_path / "metrics.json").read_text())["nonfinite_skipped"] == len(bad_steps)
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    skipped = [float(row["train/nonfinite_skipped"]) for row in rows if row["train/nonfinite_skipped"]]
    assert skipped == [2, 4]  # running total at the end of each epoch
    val_loss = [float(row["val/loss"]) for row in rows if row.get("val/loss")]
    assert val_loss[-1] < val_loss[0]  # the good steps still trained the model
    parameters = list(objects["module"].model.parameters())
    assert all(torch.isfinite(p).all() for p in parameters)
    assert all(torch.isfinite(torch.tensor(v)) for v in report["metrics"].values())


def test_a_skipped_step_leaves_the_weights_untouched(compose_cfg, tmp_path):
    """Skipping every step of an epoch = no update at all (not even AdamW's weight decay)."""
    cfg = compose_cfg(*_overrides("trainer.max_epochs=1", "training.on_nonfinite=skip",
                                  "optimizer.weight_decay=0.1",
                                  *_fault("gradient", list(range(BATCHES_PER_EPOCH)))))
    pl.seed_everything(cfg.seed)  # as train() does before building
    initial = {k: v.clone() for k, v in build_module(cfg)[0].state_dict().items()}
    report, objects = train(cfg)
    assert report["nonfinite_skipped"] == BATCHES_PER_EPOCH
    final = objects["module"].state_dict()
    assert all(torch.equal(initial[k], final[k]) for k in initial), "a skipped step changed weights"


def test_an_unknown_policy_is_refused():
    with pytest.raises(ConfigError, match=re.escape("must be one of raise, skip, got 'ignore'")):
        AutoencoderModule(model=None, objective=None, optimizer=None, on_nonfinite="ignore")


def test_the_guard_comes_with_the_module_into_a_trainer_of_one_s_own(compose_cfg):
    """`NonfiniteGuard` is the module's own callback (`configure_callbacks`): a plain
    `pl.Trainer` built without mmae's config still stops at the bad step."""
    cfg = compose_cfg(*_overrides(*_fault("value", [2])))
    module, datamodule = build_module(cfg)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    stopped = r"^step 2: non-finite loss fault/poison=nan, .*\(epoch 0, batch 2\)"
    with pytest.raises(TrainingError, match=stopped):
        trainer.fit(module, datamodule=datamodule)
    assert module.nonfinite in trainer.callbacks
