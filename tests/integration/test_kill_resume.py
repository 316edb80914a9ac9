"""A training process killed mid-epoch (SIGKILL: no handler, no cleanup) and restarted with
`ckpt_path=last` loses at most the interrupted epoch and ends exactly where a run that was
never interrupted ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stall import wait_for

from mmae.artifacts.checkpoint import load_checkpoint_file

TESTS = Path(__file__).resolve().parents[1]  # the helper modules
RUN = ["experiment=tiny", "trainer.max_epochs=3", "logger=csv", "progress_bar=none",
       "trainer.enable_model_summary=false"]
STEPS_PER_EPOCH = 8


def _mmae_train(*overrides: str) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))  # stall.py
    env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "mmae.train", *RUN, *overrides], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_from_last_ends_like_an_uninterrupted_run(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "stalled"
    stall = ["+callbacks.stall._target_=stall.StallAt", "+callbacks.stall.epoch=1",
             "+callbacks.stall.batch=4", f"+callbacks.stall.marker={marker}"]
    killed = _mmae_train(f"paths.output_dir={run}", *stall)
    wait_for(marker, killed)  # epoch 1 is half done; epoch 0's checkpoints are on disk
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    killed.stdout.close()
    survivor = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert (survivor["epoch"], survivor["global_step"]) == (0, STEPS_PER_EPOCH)  # only epoch 1 lost
    assert not (run / "metrics.json").exists()

    resumed = _mmae_train(f"paths.output_dir={run}", "ckpt_path=last")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert "Restoring states from the checkpoint path" in output

    _assert_ends_like_an_uninterrupted_run(run, tmp_path / "straight")


def _assert_ends_like_an_uninterrupted_run(run: Path, straight_dir: Path) -> None:
    # The reference run is a process like the other two: bit-equality needs the same thread
    # count and library state, which the pytest process (after other tests) need not have.
    straight = _mmae_train(f"paths.output_dir={straight_dir}")
    output, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, output
    expected = load_checkpoint_file(straight_dir / "checkpoints" / "last.ckpt")
    actual = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert actual["global_step"] == expected["global_step"] == 3 * STEPS_PER_EPOCH
    for name, weight in expected["state_dict"].items():
        assert torch.equal(weight, actual["state_dict"][name]), name
    assert (run / "metrics.json").exists() and (run / "encoder" / "model.safetensors").exists()


def _interrupt_mid_epoch(run: Path, marker: Path, signum: int, *overrides: str) -> tuple[int, str]:
    """Start a run, stop it with `signum` halfway through epoch 1; its exit code and output."""
    stall = ["+callbacks.stall._target_=stall.StallAt", "+callbacks.stall.epoch=1",
             "+callbacks.stall.batch=4", f"+callbacks.stall.marker={marker}"]
    process = _mmae_train(f"paths.output_dir={run}", *stall, *overrides)
    wait_for(marker, process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_where_it_stopped_exits_143_and_resumes_like_an_uninterrupted_run(tmp_path):
    run = tmp_path / "run"
    code, output = _interrupt_mid_epoch(run, tmp_path / "stalled", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, output
    assert "interrupted by SIGTERM: saved at epoch 1, step 13" in output
    assert f"paths.output_dir={run} ckpt_path=last" in output  # the command that resumes it
    saved = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert (saved["epoch"], saved["global_step"]) == (1, STEPS_PER_EPOCH + 5)  # mid-epoch, not epoch 0's
    assert not (run / "metrics.json").exists() and not (run / "encoder").exists()  # nothing half-done

    resumed = _mmae_train(f"paths.output_dir={run}", "ckpt_path=last")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert "not resumable" not in output  # Lightning's warning for loaders without a position

    _assert_ends_like_an_uninterrupted_run(run, tmp_path / "straight")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGUSR1], ids=["SIGINT", "SIGUSR1"])
def test_ctrl_c_and_the_requeue_signal_stop_like_sigterm(tmp_path, signum):
    run = tmp_path / "run"
    code, output = _interrupt_mid_epoch(run, tmp_path / "stalled", signum)
    assert code == 128 + signum, output
    assert f"interrupted by {signal.Signals(signum).name}: saved at epoch 1, step 13" in output
    saved = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == STEPS_PER_EPOCH + 5
    assert not (run / "metrics.json").exists()
