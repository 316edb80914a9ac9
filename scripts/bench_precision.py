"""Training throughput of mmae's own training step: fp32 eager against `compile=true`,
bf16-mixed, and both, measured in the same run on the same data.

    python scripts/bench_precision.py                          # the default job's model, CPU
    python scripts/bench_precision.py --trainer gpu data.batch_size=512
    python scripts/bench_precision.py --steps 200 model.latent_dim=64

Any further argument is a Hydra override of `conf/train.yaml`. Each variant trains
`--warmup` steps (compilation and allocator warm-up happen there) and then is timed over
`--steps` optimizer steps, synchronising the GPU before reading the clock. Prints samples/s
and the ratio to fp32 eager.
"""

from __future__ import annotations

import argparse
import sys
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from mmae.config import CONFIG_DIR
from mmae.config.assembly import build_module, build_trainer

VARIANTS = {
    "fp32 eager": ["trainer.precision=32-true"],
    "fp32 + compile": ["trainer.precision=32-true", "compile=true"],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "bf16-mixed + compile": ["trainer.precision=bf16-mixed", "compile=true"],
}


class StepTimer(pl.Callback):
    """Wall time of the optimizer steps after the first `warmup` ones."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds, self.samples = warmup, None, 0.0, 0

    def _sync(self, module: pl.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            self._sync(module)
            self.start = time.perf_counter()
        if self.start is not None:
            self.samples += len(batch)

    def on_train_end(self, trainer, module) -> None:
        self._sync(module)
        self.seconds = time.perf_counter() - self.start


def measure(trainer_choice: str, overrides: list[str], warmup: int, steps: int) -> float:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={trainer_choice}", "logger=none",
                                          "paths.output_dir=/tmp/mmae-bench", *overrides])
    pl.seed_everything(cfg.seed)
    module, datamodule = build_module(cfg)
    timer = StepTimer(warmup)
    trainer = build_trainer(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                    max_epochs=-1, max_steps=warmup + steps)
    trainer.fit(module, datamodule=datamodule)
    return timer.samples / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainer", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    args, overrides = parser.parse_known_args()
    device = (torch.cuda.get_device_name() if args.trainer == "gpu"
              else f"CPU, {torch.get_num_threads()} threads")
    rates = {name: measure(args.trainer, [*extra, *overrides], args.warmup, args.steps)
             for name, extra in VARIANTS.items()}
    baseline = rates["fp32 eager"]
    print(f"\n$ python scripts/bench_precision.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"device: {device}; torch {torch.__version__}; {args.steps} timed steps after {args.warmup}")
    print(f"{'variant':<24}{'samples/s':>12}{'vs fp32 eager':>15}")
    for name, rate in rates.items():
        print(f"{name:<24}{rate:>12,.0f}{rate / baseline:>14.2f}x")


if __name__ == "__main__":
    main()
