"""A callback that freezes training at a chosen batch, so a test can kill it right there."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl


class StallAt(pl.Callback):
    """After batch `batch` of epoch `epoch`: touch `marker`, then sleep until killed, or until
    a signal asks Lightning to stop (it then stops after this batch, as it would mid-epoch)."""

    def __init__(self, epoch: int, batch: int, marker: str, seconds: float = 600.0):
        self.epoch, self.batch, self.marker, self.seconds = epoch, batch, Path(marker), seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self.marker.touch()
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline and not trainer.received_sigterm:
                time.sleep(0.05)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300.0) -> None:
    """Wait until `path` appears (the stall's marker), failing the test if the process ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"training ended before {path.name} appeared:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path.name} after {timeout} s")
        time.sleep(0.1)
