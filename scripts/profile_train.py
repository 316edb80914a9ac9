"""Where the time of one `mmae-train` goes: start-up, decoding and statistics, the training
steps (forward, backward, optimizer), validation, export and the final report, and the FLOPs of
one training sample.

    python scripts/profile_train.py data=manifest data.path=outputs/realdata/spoken_digits/manifest.csv \\
        'modality=[image,audio]' modality.image.size=8

Takes `mmae-train`'s overrides (paths.output_dir defaults to a fresh folder under
outputs/profile/) and runs the job in this process with Lightning's SimpleProfiler, so the
phases add up to the whole. Run it with nothing else on the machine.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: they are part of a user's wait

import functools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import mmae.cli.train as job  # noqa: E402
from mmae.config import compose_config  # noqa: E402

#: The SimpleProfiler's actions that make up a training step and a validation pass.
STEP = "[LightningModule]AutoencoderModule.optimizer_step"  # closure: forward + backward, then the update
FORWARD = "[Strategy]SingleDeviceStrategy.training_step"
BACKWARD = "[Strategy]SingleDeviceStrategy.backward"
VALIDATION = "[Strategy]SingleDeviceStrategy.validation_step"
NEXT_BATCH = "[_TrainingEpochLoop].train_dataloader_next"


def timed(seconds: dict[str, float], phase: str, function):
    """`function`, adding its wall seconds to `seconds[phase]`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start

    return wrapper


def flops_per_sample(module, datamodule) -> float:
    """FLOPs of one training step (corruption, forward, loss, backward) over its batch size."""
    batch = next(iter(datamodule.train_dataloader()))
    module.train()
    with FlopCounterMode(display=False) as counter:
        losses, _ = module._losses(batch, train=True)
        losses.total.backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch)


def profile(overrides: list[str]) -> dict:
    seconds: dict[str, float] = {}
    job.build_module = timed(seconds, "build (decode, statistics, model)", job.build_module)
    job.export_encoder = timed(seconds, "export", job.export_encoder)
    job._report = timed(seconds, "final report (best checkpoint, leave-one-out imputation)", job._report)
    if not any(o.startswith("paths.output_dir=") for o in overrides):
        overrides = [*overrides, f"paths.output_dir=outputs/profile/{time.strftime('%Y%m%d-%H%M%S')}"]
    cfg = compose_config("train", [*overrides, "+trainer.profiler=simple", "progress_bar=none"])
    begin = time.perf_counter()
    seconds["start-up (imports, config)"] = begin - STARTED
    report, objects = job.train(cfg)
    whole = time.perf_counter() - STARTED
    durations = objects["trainer"].profiler.recorded_durations
    total = {action: sum(values) for action, values in durations.items()}
    steps = len(durations.get(STEP, []))
    phases = {
        "training steps: forward (corruption, model, loss)": total.get(FORWARD, 0.0),
        "training steps: backward": total.get(BACKWARD, 0.0),
        "training steps: optimizer and hooks": total.get(STEP, 0.0) - total.get(FORWARD, 0.0)
        - total.get(BACKWARD, 0.0),
        "training batches: loading": total.get(NEXT_BATCH, 0.0),
        "validation (every epoch, with leave-one-out)": total.get(VALIDATION, 0.0),
    }
    phases["rest of fit (checkpoints, logging, loops)"] = (
        whole - sum(seconds.values()) - sum(phases.values()))
    module, datamodule = objects["module"], objects["datamodule"]
    return {"whole": whole, "phases": {**seconds, **phases}, "steps": steps,
            "flops_per_sample": flops_per_sample(module, datamodule),
            "batch_size": cfg.data.batch_size, "epochs": report["epochs"],
            "output_dir": str(objects["output_dir"])}


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    outcome = profile(argv)
    whole = outcome["whole"]
    print(f"\nwhole job {whole:.1f} s ({outcome['epochs']} epochs, {outcome['steps']} training steps of "
          f"{outcome['batch_size']}; {outcome['flops_per_sample'] / 1e6:.1f} MFLOP per training sample, "
          f"forward and backward)\n")
    print("| phase | seconds | share |\n|---|---:|---:|")
    for phase, value in outcome["phases"].items():
        print(f"| {phase} | {value:.1f} | {100 * value / whole:.0f}% |")
    print(f"\nrun: {Path(outcome['output_dir'])}")


if __name__ == "__main__":
    main(sys.argv[1:])
