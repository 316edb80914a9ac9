"""Stopping a training run on a signal without losing it: SIGTERM (what `kill`, SLURM's
preemption and time limits send), SIGINT (Ctrl+C) and the requeue signal (SIGUSR1, what
`sbatch --signal=USR1@120` sends before a job's time is up).

While `trainer.fit` runs, each of them asks Lightning for its graceful stop: training halts
once the batch in flight is done, `InterruptCheckpoint` saves `checkpoints/last.ckpt` at
exactly that point (mid-epoch included: the training loader's position is in it), and
`Interrupted` is raised for the command to print how to resume and exit with 128 + the
signal's number. Nothing is exported and no metrics are written: an interrupted run never
looks finished. A second Ctrl+C stops at once, without a checkpoint. Outside `fit` (data
decoding before, export after) a signal stops the run at once: there is no unsaved training
then, and every file mmae writes is written atomically.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

#: The signals that stop a run with a resumable checkpoint.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Interrupted(BaseException):
    """Training stopped on signal `signum`; `checkpoint` holds where it stopped (None when it
    stopped before training began or after it ended). A BaseException, like KeyboardInterrupt,
    so that no `except Exception` on the way out mistakes it for a failure to report."""

    def __init__(self, signum: int, checkpoint: str | None = None, epoch: int | None = None,
                 step: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class InterruptCheckpoint(pl.Callback):
    """Saves `<checkpoints>/last.ckpt` when Lightning stops for a signal, where `ckpt_path=last`
    finds it; the run's other checkpoints stay as they were."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / "last.ckpt"
        self.saved: str | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path)  # (every rank takes part; rank zero writes)
            self.saved = str(self.path)


class SignalStop:
    """Turns SIGTERM, SIGINT and SIGUSR1 into Lightning's graceful stop while `fitting()`."""

    def __init__(self):
        self.signum: int | None = None
        self._handler = self._on_signal  # (one bound method, to recognise it among handlers)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl+C twice: stop now
        if self.signum is None:
            self.signum = signum
        lightning = signal.getsignal(signal.SIGTERM)
        if lightning is self._handler or not callable(lightning):
            raise Interrupted(self.signum)  # Lightning is not listening (fit not running): stop now
        if signum != signal.SIGTERM:
            lightning(signal.SIGTERM, frame)  # Lightning's own SIGTERM handling, then ours again

    @contextlib.contextmanager
    def fitting(self) -> Iterator[SignalStop]:
        """Handle the signals for the duration of the block; the previous handlers after."""
        previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handler)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
