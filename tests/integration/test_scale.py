"""Trainer choices and scale-out: DDP on CPU through Hydra, torchrun, sweeps, precision, compile."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra.types import RunMode
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from mmae import load_encoder
from mmae.cli.train import _check_external_launch, _check_launcher, _default_trainer, train
from mmae.config import check_group_overrides, is_rank_zero_process
from mmae.config.assembly import build_all, build_trainer
from mmae.core.errors import ConfigError

QUIET = ["experiment=tiny", "logger=none", "progress_bar=none", "trainer.enable_model_summary=false"]
# Each tiny run: 256 training samples in batches of 32.
STEPS_PER_EPOCH = 8


def _run(args, cwd, timeout=400, env=None):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    return result, result.stdout + result.stderr


def _assert_single_run_outputs(run_dir, parent):
    """One output dir with one checkpoint set, one export, metrics; nothing from rank 1."""
    assert sorted(p.name for p in parent.iterdir()) == [run_dir.name]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (run_dir / "encoder").iterdir()) == ["README.md", "config.json",
                                                                      "model.safetensors"]
    assert not list(run_dir.glob("*ddp_process*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["val/loss"] > 0 and metrics["val/image/recon_without_image"] > 0
    # Two processes split each epoch: half the optimizer steps of a single-process run.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2 * STEPS_PER_EPOCH // 2
    load_encoder(run_dir / "encoder")


@pytest.mark.parametrize(("choice", "accelerator", "devices", "strategy"), [
    ("cpu", "cpu", 1, None), ("gpu", "gpu", 1, None), ("ddp", "gpu", -1, "ddp"),
    ("ddp_cpu", "cpu", 2, "ddp")])
def test_trainer_choices(compose_cfg, choice, accelerator, devices, strategy):
    trainer = compose_cfg(f"trainer={choice}").trainer
    assert (trainer.accelerator, trainer.devices, trainer.get("strategy")) == (accelerator, devices, strategy)
    assert trainer.num_nodes == 1 and trainer.precision == "32-true"


def test_ddp_cpu_builds_two_processes_launched_by_lightning(compose_cfg):
    cfg = compose_cfg(*QUIET, "trainer=ddp_cpu")
    trainer = build_trainer(cfg.trainer, callbacks=build_all(cfg.callbacks), logger=False)
    assert trainer.world_size == 2 and trainer.is_global_zero
    assert isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)


@pytest.mark.slow
def test_ddp_cpu_through_hydra_writes_one_run(tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    run_dir = work / "run"
    offline = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(home),
               "WANDB_CACHE_DIR": str(home), "WANDB_CONFIG_DIR": str(home), "WANDB_DATA_DIR": str(home)}
    result, output = _run(["mmae-train", "trainer=ddp_cpu", "experiment=tiny", "logger=wandb",
                           "progress_bar=none", f"paths.output_dir={run_dir}"], cwd=work, env=offline)
    assert result.returncode == 0, output[-3000:]
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output
    assert output.count("mmae-train: outputs in") == 1  # only rank zero reports
    _assert_single_run_outputs(run_dir, work)
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # one W&B run


@pytest.mark.slow
def test_torchrun_launch_writes_one_run(tmp_path):
    """What a node of a multi-node job runs; here one node with two CPU processes."""
    run_dir = tmp_path / "run"
    result, output = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "mmae.train", "trainer=ddp_cpu", *QUIET,
                           f"paths.output_dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, output[-3000:]
    _assert_single_run_outputs(run_dir, tmp_path)


SLURM_TASK = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "mmae",
              "SLURM_NODELIST": "node1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
              "SLURM_JOB_ID": "7"}


def test_a_sweep_may_use_ddp_where_slurm_starts_the_processes(compose_cfg, monkeypatch):
    """Lightning re-launches only processes it starts itself; SLURM tasks (submitit) it does not."""
    cfg = compose_cfg(*QUIET, "trainer=ddp_cpu")
    local = build_trainer(cfg.trainer, logger=False)
    with pytest.raises(ConfigError, match="Lightning #11300"):
        _check_launcher(local, multirun=True)
    _check_launcher(local, multirun=False)
    for var, value in SLURM_TASK.items():
        monkeypatch.setenv(var, value)
    _check_launcher(build_trainer(cfg.trainer, logger=False), multirun=True)


def test_hydra_s_own_groups_are_left_to_hydra(compose_cfg):
    check_group_overrides(["hydra/job_logging=stdout", "hydra/launcher=submitit_local"])
    cfg = compose_cfg("hydra/job_logging=stdout")  # replaces mmae's rank_zero logging cleanly
    assert cfg.seed == 42


def test_external_launch_without_an_output_dir_is_refused(monkeypatch):
    def hydra_cfg(*overrides, mode=RunMode.RUN):
        return OmegaConf.create({"mode": mode, "overrides": {"task": list(overrides)}})

    _check_external_launch(hydra_cfg("trainer=ddp"))  # a plain launch: fine
    monkeypatch.setenv("SLURM_NTASKS", "8")
    with pytest.raises(ConfigError, match=r"pass paths\.output_dir=DIR, the same for every process"):
        _check_external_launch(hydra_cfg("trainer=ddp"))
    _check_external_launch(hydra_cfg("trainer=ddp", "paths.output_dir=runs/1"))
    _check_external_launch(hydra_cfg("trainer=ddp", mode=RunMode.MULTIRUN))  # composed once


@pytest.mark.parametrize(("env", "zero"), [({}, True), ({"LOCAL_RANK": "1"}, False), ({"RANK": "3"}, False),
                                            ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
                                            ({"RANK": "0", "LOCAL_RANK": "0"}, True)])
def test_rank_zero_from_the_launchers_environment(monkeypatch, env, zero):
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert is_rank_zero_process() is zero


@pytest.mark.slow
def test_multirun_with_ddp_stops_at_once_naming_the_alternative(tmp_path):
    result, output = _run(["mmae-train", "-m", "trainer=ddp_cpu", *QUIET, "model.latent_dim=4,8",
                           f"paths.output_dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Lightning #11300" in output and "trainer.strategy=ddp_spawn" in output
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.json"))


@pytest.mark.slow
def test_sweep_with_ddp_spawn_writes_each_run_and_a_summary(tmp_path):
    sweep = tmp_path / "sweep"
    result, output = _run(["mmae-train", "-m", "trainer=ddp_cpu", "trainer.strategy=ddp_spawn", *QUIET,
                           "model.latent_dim=4,8", f"paths.output_dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, output[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    latents = [json.loads((sweep / run / "config.yaml").read_text().split("latent_dim: ")[1].split()[0])
               for run in ("0", "1")]
    assert latents == [4, 8]
    rows = json.loads((sweep / "summary.json").read_text())
    assert [row["overrides"] for row in rows] == ["model.latent_dim=4", "model.latent_dim=8"]
    for run, row in zip(("0", "1"), rows, strict=True):
        metrics = json.loads((sweep / run / "metrics.json").read_text())["metrics"]
        assert row["val/loss"] == pytest.approx(metrics["val/loss"]) and row["status"] == "ok"
    assert "| model.latent_dim=8 |" in (sweep / "summary.md").read_text()
    assert "mmae-train: sweep of 2 runs" in output


@pytest.mark.slow
def test_a_failing_point_still_leaves_a_summary(tmp_path):
    sweep = tmp_path / "sweep"
    result, output = _run(["mmae-train", "-m", *QUIET, "trainer.max_epochs=1", "optimizer.lr=0.002,-1",
                           f"paths.output_dir={sweep}"], cwd=tmp_path)
    assert result.returncode != 0 and "Invalid learning rate" in output
    rows = json.loads((sweep / "summary.json").read_text())
    assert [(row["overrides"], row["status"]) for row in rows] == [
        ("optimizer.lr=0.002", "ok"), ("optimizer.lr=-1", "failed or unfinished (no metrics.json)")]


@pytest.mark.slow
def test_sweep_through_the_submitit_launcher(tmp_path):
    """The launcher behind SLURM sweeps (submitit_slurm), run locally: same runs, same summary."""
    sweep = tmp_path / "sweep"
    result, output = _run(["mmae-train", "-m", "hydra/launcher=submitit_local", *QUIET,
                           "model.latent_dim=4,8", f"paths.output_dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, output[-3000:]
    rows = json.loads((sweep / "summary.json").read_text())
    assert [(row["overrides"], row["status"]) for row in rows] == [
        ("model.latent_dim=4", "ok"), ("model.latent_dim=8", "ok")]


@pytest.mark.slow
def test_compile_checkpoints_and_exports_the_uncompiled_module(compose_cfg, tmp_path):
    """`aot_eager` traces through dynamo and AOTAutograd like inductor, without needing a C++
    compiler on the CI machine; the numbers must match eager training."""
    train(compose_cfg(*QUIET, "paths.output_dir=" + str(tmp_path / "eager")))
    report, compiled = train(compose_cfg(*QUIET, "compile=true", "compile_options.backend=aot_eager",
                                         "paths.output_dir=" + str(tmp_path / "compiled")))
    assert compiled["module"].model._compiled_call_impl is not None  # it really ran compiled
    expected = torch.load(tmp_path / "eager" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    actual = torch.load(tmp_path / "compiled" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert actual.keys() == expected.keys()  # no `_orig_mod.` prefixes
    for name, weight in expected.items():
        torch.testing.assert_close(actual[name], weight, atol=1e-4, rtol=1e-4, msg=name)
    encoder = load_encoder(report["encoder"])
    batch = next(iter(compiled["datamodule"].val_dataloader()))
    inputs = {n: batch.inputs[n] for n in ("image", "vector")}
    present = {n: batch.present[n] for n in ("image", "vector")}
    with torch.no_grad():
        reference = compiled["module"].model.eval().encoder(inputs, present).code
    torch.testing.assert_close(encoder(inputs, present), reference, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_cpu(compose_cfg, tmp_path):
    report, objects = train(compose_cfg(*QUIET, "trainer.precision=bf16-mixed"))
    assert objects["trainer"].precision == "bf16-mixed"
    assert all(v == v and abs(v) < 1e3 for v in report["metrics"].values())  # finite
    weights = objects["module"].model.state_dict()
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    _, fp32 = train(compose_cfg(*QUIET, f"paths.output_dir={tmp_path / 'fp32'}"))
    reference = fp32["module"].model.state_dict()
    assert any(not torch.equal(weights[n], reference[n]) for n in weights)  # autocast was active


def test_gradient_accumulation_and_clipping_reach_the_trainer(compose_cfg):
    _, objects = train(compose_cfg(*QUIET, "trainer.accumulate_grad_batches=2",
                                   "trainer.gradient_clip_val=0.5"))
    trainer = objects["trainer"]
    assert trainer.global_step == 2 * STEPS_PER_EPOCH // 2  # one optimizer step per two batches
    assert trainer.gradient_clip_val == 0.5 and trainer.gradient_clip_algorithm == "norm"


@pytest.mark.parametrize(("choice", "bar"), [("tqdm", TQDMProgressBar), ("rich", RichProgressBar),
                                             ("none", None)])
def test_progress_bar_choice(compose_cfg, choice, bar):
    cfg = compose_cfg(f"progress_bar={choice}")
    trainer = build_trainer(cfg.trainer, callbacks=build_all(cfg.callbacks), logger=False)
    if bar is None:
        assert trainer.progress_bar_callback is None
    else:
        assert type(trainer.progress_bar_callback) is bar


def test_disabling_the_progress_bar_overrules_the_choice(compose_cfg):
    cfg = compose_cfg("progress_bar=rich", "trainer.enable_progress_bar=false")
    trainer = build_trainer(cfg.trainer, callbacks=build_all(cfg.callbacks), logger=False)
    assert trainer.progress_bar_callback is None


def test_a_visible_gpu_makes_gpu_the_default_trainer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _default_trainer(["experiment=tiny"]) == ["trainer=gpu"]
    assert _default_trainer(["trainer=ddp"]) == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _default_trainer([]) == []
