"""Framework overhead: mmae's training loop (Lightning + AutoencoderModule) against a
hand-written PyTorch loop of the same model, data, batch size, corruption, loss and optimizer.

    python scripts/bench_overhead.py
    python scripts/bench_overhead.py --steps 300 data.batch_size=256

Any further argument is a Hydra override of `conf/train.yaml` (CPU only: the plain loop does
no device placement). Both loops run the same step on the same loader, `--warmup` steps
untimed, then `--steps` timed optimizer steps; the target is mmae/plain >= 0.9.
"""

from __future__ import annotations

import argparse
import sys
import time

import pytorch_lightning as pl
import torch
from bench_precision import measure  # mmae's loop, timed as the precision benchmark times it
from hydra import compose, initialize_config_dir

from mmae.config import CONFIG_DIR
from mmae.config.assembly import build_module


def _config(overrides: list[str]):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["trainer=cpu", "logger=none", "paths.output_dir=/tmp/mmae-bench",
                                           *overrides])


def plain_loop(overrides: list[str], warmup: int, steps: int) -> float:
    """Samples/s of the same training step (`AutoencoderModule._losses`: preprocessing,
    corruption, objective) on the same loader, driven by a hand-written loop."""
    cfg = _config(overrides)
    pl.seed_everything(cfg.seed)
    module, datamodule = build_module(cfg)
    optimizer = module.optimizer_factory(params=module.parameters())
    loader = datamodule.train_dataloader()
    module.train()
    done, samples, start = 0, 0, None
    while done < warmup + steps:
        for batch in loader:
            if done == warmup:
                start = time.perf_counter()
            if done >= warmup:
                samples += len(batch)
            losses, _ = module._losses(batch, train=True)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            optimizer.step()
            done += 1
            if done == warmup + steps:
                break
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs; the best of each")
    args, overrides = parser.parse_known_args()
    plain, framework = 0.0, 0.0
    for _ in range(args.repeats):  # alternate, so that drift in the machine hits both alike
        plain = max(plain, plain_loop(overrides, args.warmup, args.steps))
        framework = max(framework, measure("cpu", overrides, args.warmup, args.steps))
    print(f"\n$ python scripts/bench_overhead.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}; best of {args.repeats}, "
          f"{args.steps} timed steps after {args.warmup}")
    print(f"{'loop':<28}{'samples/s':>12}{'steps/s':>10}{'ratio':>8}")
    batch = _config(overrides).data.batch_size
    for name, rate in (("plain PyTorch", plain), ("mmae (Lightning)", framework)):
        print(f"{name:<28}{rate:>12,.0f}{rate / batch:>10.1f}{rate / plain:>8.2f}")


if __name__ == "__main__":
    main()
