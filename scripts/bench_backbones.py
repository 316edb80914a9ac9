"""Pretrained backbones under a modality: what the frozen-backbone cache buys in training
speed, and whether a small self-supervised backbone beats mmae's from-scratch CNN on the
real-data benchmark. Every figure is measured in this run; nothing is downloaded.

    python scripts/bench_backbones.py                                  # full run (10-17 min, 2 CPUs)
    python scripts/bench_backbones.py --quick                          # smoke run (tiny sizes, 1 epoch)
    python scripts/bench_backbones.py --epochs 15 --json outputs/backbones/bench.json

**Speed** (synthetic data, `modality=[image,vector]`, 28x28 images): an untrained ViT (built
from a `ViTConfig`, saved with `save_pretrained` beside a `ViTImageProcessor`) goes under the
image modality with `modality.image.model=DIR` (frozen, as a pretrained model is), and the
same fit runs twice: with the cache (`training.cache_backbones=true`, the default: each sample's
backbone output is computed once) and without it. Both fits are in this process with the
same seed and epochs; the figures are training samples/s over epochs 2+ (the cache is filled
in epoch 1, so these are the epochs it speeds up; the clock runs from the epoch's start to
its last training batch, validation excluded), the same over the whole `trainer.fit` (every
epoch, validation and start-up included), and the ratio cached / uncached. The samples that
went through the backbone (a hook on its input adapter) and `StemCache.forwards` are printed
as evidence that the cached fit runs the backbone once per sample.

**Quality** (spoken digits, `scripts/realdata.py`): a small ViT (8x8 grey input, 2x2 patches)
is pre-trained here, without labels, on the training split's images by SimCLR: two random
views of each image (small rotation, scale and shift, pixel noise), a projection head, the
NT-Xent contrastive loss; the head is dropped and the ViT saved with `save_pretrained` beside
a `ViTImageProcessor` holding the training pixels' mean and std. (SimMIM, masked-patch
reconstruction with `ViTForMaskedImageModeling`, was tried first while writing this script:
after 40 epochs its mean-pooled features probed at 86%, below the untrained ViT's 89%.)
Then two `mmae-train` runs of `scripts/bench_realdata.py`'s command (the README's manifest
command plus the image size):

- **mmae default (CNN)**: that command as is.
- **mmae + pretrained ViT (frozen)**: the same plus `modality.image.model=DIR`; the audio keeps
  its CNN (a wav2vec2-style backbone is not pre-trainable in a few CPU minutes). A frozen,
  cached backbone sees the clean image: element noise of the denoising corruption does not
  reach it (modality dropout still does).

Both are scored by `bench_realdata.py`'s probes of the exported encoder's codes (probe all /
image only / audio only) and its cross-modal coherence columns; below them, the same linear
probe on the ViT's own mean-pooled features (pre-trained, and untrained with the same
initialisation: what the pre-training buys) and on the raw inputs. `train s` is the whole
`mmae-train` command (for the pre-trained ViT's features: the pre-training). The verdict line compares the two
mmae rows whichever wins.

`--threads 1` helps a lot when other jobs share the cores (torch's default two threads then
wait on each other). `--quick` shrinks everything (256 synthetic samples, a 100-pair subset
of spoken digits in its own folder, one epoch) to check that the script runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

import mmae

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from bench_realdata import (  # noqa: E402  (sibling scripts)
    BOTH,
    DEFAULT_DATA,
    BenchError,
    RealFeatureClassifiers,
    Run,
    evaluate_inputs,
    evaluate_joint,
    load_splits,
    probe,
    table,
    train,
    train_args,
    write_json,
)
from realdata import EspeakMissing, build_spoken_digits  # noqa: E402

from mmae.config import compose_config  # noqa: E402
from mmae.config.assembly import build_module, build_trainer  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """Everything the run's length depends on (`--quick` picks the small one)."""

    speed_samples: int  # synthetic data.dataset.num_samples
    speed_epochs: int
    speed_vit: dict  # ViTConfig entries of the throughput backbone (28x28 images)
    limit: int | None  # spoken-digits subset (None: all 1,797 pairs)
    vit: dict  # ViTConfig entries of the pre-trained backbone (8x8 images)
    pretrain_epochs: int
    pretrain_batch: int
    epochs: int | None  # trainer.max_epochs of the real-data runs (None: the config's)


FULL = Sizes(speed_samples=4000, speed_epochs=3,
             speed_vit={"patch_size": 4, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                        "intermediate_size": 256},
             limit=None,
             vit={"patch_size": 2, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                  "intermediate_size": 128},
             pretrain_epochs=100, pretrain_batch=128, epochs=None)
QUICK = Sizes(speed_samples=256, speed_epochs=2,
              speed_vit={"patch_size": 7, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64},
              limit=100,
              vit={"patch_size": 2, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                   "intermediate_size": 64},
              pretrain_epochs=1, pretrain_batch=32, epochs=1)
SPEED_IMAGE = 28  # the synthetic images' side (modality.image.size's default)
DIGIT_IMAGE = 8
HEADERS_NOTE = "accuracy in % on the test split (chance 10%)"


def save_vit(folder: Path, image_size: int, settings: dict, mean: float, std: float,
             model: nn.Module | None = None, seed: int = 0) -> Path:
    """A grey-image ViT (`model`, else an untrained one from `settings`) and its image processor
    (no resize at `image_size`, normalisation by `mean`/`std`), both `save_pretrained` to `folder`."""
    import transformers
    from transformers import ViTModel

    if model is None:
        torch.manual_seed(seed)
        model = ViTModel(vit_config(image_size, settings))
    model.save_pretrained(folder)
    # transformers 5 falls back to the Pillow processor without torchvision (with a warning):
    # ask for it by name; it saves the same preprocessor_config.json.
    processor_class = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    processor_class(size={"height": image_size, "width": image_size}, image_mean=[mean],
                    image_std=[std]).save_pretrained(folder)
    return folder


def vit_config(image_size: int, settings: dict):
    from transformers import ViTConfig

    return ViTConfig(image_size=image_size, num_channels=1, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, **settings)


# --------------------------------------------------------------------------- throughput


class EpochTimer(pl.Callback):
    """Per training epoch: seconds from its start to its last training batch (validation,
    which follows, excluded) and the samples trained on."""

    def __init__(self):
        self.epochs: list[tuple[float, int]] = []
        self._start, self._end, self._samples = 0.0, 0.0, 0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start, self._end, self._samples = time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._end = time.perf_counter()
        self._samples += len(batch)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.epochs.append((self._end - self._start, self._samples))


class BackboneCounter:
    """Calls of a backbone encoder's stem and samples through it (a hook on its input adapter,
    which only the stem calls), registered after the build, so its trial forward is not counted."""

    def __init__(self, encoder: nn.Module):
        self.calls, self.samples = 0, 0
        encoder.adapter.register_forward_hook(self._count)

    def _count(self, module, args, output) -> None:
        self.calls += 1
        self.samples += int(args[0].shape[0])


def time_fit(overrides: list[str], epochs: int, folder: Path) -> dict:
    """One in-process fit of `overrides` (a composed, validated `train` config), timed."""
    cfg = compose_config("train", ["logger=none", f"paths.output_dir={folder}", *overrides])
    pl.seed_everything(cfg.seed, verbose=False)
    module, datamodule = build_module(cfg)
    counter = BackboneCounter(module.model.encoder.encoders["image"])
    timer = EpochTimer()
    trainer = build_trainer(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, max_epochs=epochs)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    later = timer.epochs[1:] or timer.epochs
    later_s, later_n = sum(s for s, _ in later), sum(n for _, n in later)
    all_n = sum(n for _, n in timer.epochs)
    return {"overrides": overrides, "epochs": [{"seconds": s, "samples": n} for s, n in timer.epochs],
            "samples_per_s_after_first": later_n / later_s, "fit_s": fit_s,
            "samples_per_s_fit": all_n / fit_s,
            "train_samples": len(datamodule.dataset("train")), "val_samples": len(datamodule.dataset("val")),
            "backbone_calls": counter.calls, "backbone_samples": counter.samples,
            "stem_cache_forwards": dict(module.stems.forwards) if module.stems is not None else None}


def bench_speed(sizes: Sizes, out: Path, seed: int) -> dict:
    """Cached against uncached fits of the same frozen ViT on the synthetic data."""
    vit = save_vit(out / "speed-vit", SPEED_IMAGE, sizes.speed_vit, mean=0.5, std=0.5, seed=seed)
    base = [f"modality.image.model={vit}", f"data.dataset.num_samples={sizes.speed_samples}"]
    fits = {}
    for label, cache in (("uncached", "false"), ("cached", "true")):
        print(f"[speed] {label}: {sizes.speed_epochs} epochs, {' '.join(base)} "
              f"training.cache_backbones={cache}", flush=True)
        fits[label] = time_fit([*base, f"training.cache_backbones={cache}"], sizes.speed_epochs,
                               out / f"speed-{label}")
    cached, uncached = fits["cached"], fits["uncached"]
    return {"vit": {"image_size": SPEED_IMAGE, **sizes.speed_vit}, "folder": str(vit), "fits": fits,
            "ratio_after_first": cached["samples_per_s_after_first"] / uncached["samples_per_s_after_first"],
            "ratio_fit": cached["samples_per_s_fit"] / uncached["samples_per_s_fit"]}


def speed_table(speed: dict) -> str:
    lines = ["| fit | samples/s, epochs 2+ | samples/s, whole fit | fit s | samples through the backbone "
             "| StemCache.forwards |", "|---|---:|---:|---:|---:|---|"]
    for label, fit in speed["fits"].items():
        forwards = fit["stem_cache_forwards"]
        lines.append(f"| {label} | {fit['samples_per_s_after_first']:,.0f} | "
                     f"{fit['samples_per_s_fit']:,.0f} | {fit['fit_s']:.1f} | "
                     f"{fit['backbone_samples']:,} ({fit['backbone_calls']} calls) | "
                     f"{forwards if forwards is not None else 'no cache'} |")
    lines.append(f"| **cached / uncached** | **{speed['ratio_after_first']:.2f}x** | "
                 f"**{speed['ratio_fit']:.2f}x** | | | |")
    return "\n".join(lines)


# ------------------------------------------------------------------------- pre-training


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random view of each grey image: rotation (+-0.25 rad), scale (+-15%), shift (+-1/4 of
    the side), then Gaussian pixel noise (sd 0.1)."""
    n = len(images)
    angle = (torch.rand(n, generator=g) - 0.5) * 0.5
    scale = 1 + (torch.rand(n, generator=g) - 0.5) * 0.3
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale * torch.cos(angle)
    theta[:, 0, 1], theta[:, 1, 0] = -scale * torch.sin(angle), scale * torch.sin(angle)
    theta[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.5) * 0.5
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    return views + 0.1 * torch.randn(views.shape, generator=g)


def nt_xent(z: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's loss: the rows are two views of a batch, each view's positive is the other."""
    z = F.normalize(z, dim=1)
    similarity = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    half = len(z) // 2
    positives = torch.cat([torch.arange(half, 2 * half), torch.arange(0, half)])
    return F.cross_entropy(similarity, positives)


def pooled(vit: nn.Module, images: torch.Tensor, mean: float, std: float) -> np.ndarray:
    """The ViT's tokens averaged (mmae's `pooling: mean`), for images in [0, 1]."""
    was = vit.training
    vit.eval()
    with torch.no_grad():
        parts = [vit((images[i:i + 512] - mean) / std).last_hidden_state.mean(dim=1)
                 for i in range(0, len(images), 512)]
    vit.train(was)
    return torch.cat(parts).numpy()


def pretrain_vit(images: torch.Tensor, sizes: Sizes, seed: int,
                 folder: Path) -> tuple[Path, dict, tuple[nn.Module, nn.Module]]:
    """SimCLR on `images` (the training split; no labels), the ViT saved with its processor in
    `folder`; also the untrained ViT of the same initialisation, for reference."""
    from transformers import ViTModel

    mean, std = float(images.mean()), float(images.std())
    torch.manual_seed(seed)
    # With its (unused) pooler, as `AutoModel` loads a ViT: every weight is in the saved file.
    vit = ViTModel(vit_config(DIGIT_IMAGE, sizes.vit))
    untrained = ViTModel(vit.config)
    untrained.load_state_dict(vit.state_dict())
    width = vit.config.hidden_size
    projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 32))
    optimizer = torch.optim.AdamW([*vit.parameters(), *projection.parameters()], lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    batch, losses = min(sizes.pretrain_batch, len(images)), []
    vit.train()
    start = time.perf_counter()
    for epoch in range(sizes.pretrain_epochs):
        order, total, steps = torch.randperm(len(images), generator=g), 0.0, 0
        for begin in range(0, len(images) - batch + 1, batch):  # full batches: fixed negatives
            chosen = images[order[begin:begin + batch]]
            views = (torch.cat([augment(chosen, g), augment(chosen, g)]) - mean) / std
            loss = nt_xent(projection(vit(views).last_hidden_state.mean(dim=1)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / steps)
        if epoch % 20 == 19 or epoch == sizes.pretrain_epochs - 1:
            print(f"[pretrain] epoch {epoch + 1}/{sizes.pretrain_epochs}: NT-Xent {losses[-1]:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    save_vit(folder, DIGIT_IMAGE, sizes.vit, mean, std, model=vit)
    stats = {"method": "SimCLR", "seconds": seconds, "epochs": sizes.pretrain_epochs, "batch": batch,
             "loss_first": losses[0], "loss_last": losses[-1], "pixel_mean": mean, "pixel_std": std,
             "vit": {"image_size": DIGIT_IMAGE, **sizes.vit}, "folder": str(folder)}
    return folder, stats, (vit, untrained)


# ------------------------------------------------------------------------------ quality


def bench_quality(args: argparse.Namespace, sizes: Sizes, out: Path, data_seed: int) -> dict:
    """Pre-train the ViT, train mmae with the CNN and with the frozen ViT, probe both."""
    start = time.perf_counter()
    manifest = build_spoken_digits(args.data, seed=data_seed, limit=sizes.limit).resolve()
    build_s = time.perf_counter() - start
    data = load_splits(manifest)
    train_split, test_split = data["train"], data["test"]
    vit_dir, pretraining, (vit, untrained) = pretrain_vit(train_split.image, sizes, data_seed,
                                                          out / "digits-vit")

    extra = ([] if sizes.epochs is None else [f"trainer.max_epochs={sizes.epochs}"]) + (
        [] if args.seed is None else [f"seed={args.seed}"])
    runs = {}
    for name, overrides in (("mmae-cnn", []), ("mmae-vit", [f"modality.image.model={vit_dir}"])):
        folder = (out / "runs" / name).resolve()
        runs[name] = train(Run(name, BOTH, overrides, folder, train_args(manifest, BOTH, folder,
                                                                         [*overrides, *extra])))

    judges = {name: RealFeatureClassifiers(train_split.labels) for name in BOTH}
    results = {name: evaluate_joint(run, data, judges) for name, run in runs.items()}
    cnn_model = mmae.load_checkpoint_model(runs["mmae-cnn"].folder / "checkpoints" / "best.ckpt")
    raw, _ = evaluate_inputs(cnn_model, data, results["mmae-cnn"]["latent_dim"], data_seed, judges)
    mean, std = pretraining["pixel_mean"], pretraining["pixel_std"]

    def features_probe(model: nn.Module) -> float:
        return probe(pooled(model, train_split.image, mean, std), train_split.labels,
                     pooled(model, test_split.image, mean, std), test_split.labels)

    rows = {"mmae_cnn": {"method": "mmae default (CNN)", **results["mmae-cnn"]},
            "mmae_vit": {"method": "mmae + pretrained ViT (frozen)", **results["mmae-vit"]},
            "vit_features": {"method": "ViT features, SimCLR-pretrained (no labels)",
                             "image_only": features_probe(vit), "train_s": pretraining["seconds"]},
            "untrained_vit_features": {"method": "ViT features, untrained (same init)",
                                       "image_only": features_probe(untrained)},
            "raw_input_probe": {"method": "raw-input probe", **raw}}
    return {"rows": rows, "pretraining": pretraining,
            "runs": {name: {"command": run.command, "seconds": run.seconds, "folder": str(run.folder)}
                     for name, run in runs.items()},
            "dataset": {"manifest": str(manifest), "seed": data_seed, "limit": sizes.limit,
                        "build_s": build_s, "train": len(train_split.labels), "test": len(test_split.labels)}}


def verdict(rows: dict) -> str:
    cnn, vit = rows["mmae_cnn"], rows["mmae_vit"]
    parts = [f"{label} {100 * (vit[key] - cnn[key]):+.1f}" for key, label in
             (("probe_all", "probe all"), ("image_only", "image only"), ("audio_only", "audio only"))]
    wins = sum(vit[key] > cnn[key] for key in ("probe_all", "image_only", "audio_only"))
    return (f"pretrained ViT (frozen) against the CNN, points: {', '.join(parts)} "
            f"(the ViT row is better in {wins} of 3 probe columns)")


# --------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny sizes, one epoch, a 100-pair data subset (figures mean "
                             "nothing)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="trainer.max_epochs of the real-data runs (default: the config's; --quick: 1)")
    parser.add_argument("--speed-epochs", type=int, default=None,
                        help=f"epochs of each throughput fit, >= 2 (default {FULL.speed_epochs}; "
                             f"--quick: {QUICK.speed_epochs})")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help=f"SimCLR epochs (default {FULL.pretrain_epochs}; "
                             f"--quick: {QUICK.pretrain_epochs})")
    parser.add_argument("--seed", type=int, default=None,
                        help="dataset and pre-training seed, also seed=N for every mmae run (default: "
                             "dataset 0, mmae's own default seed), as bench_realdata.py")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"spoken-digits folder, built there if needed (default {DEFAULT_DATA}; "
                             f"--quick: {DEFAULT_DATA}_quick)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where backbones and runs go, a fresh folder (default outputs/backbones/<time>)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads here and OMP_NUM_THREADS of the mmae-train runs (default: "
                             "torch's choice); 1 is much faster when other jobs share the cores")
    parser.add_argument("--skip-speed", action="store_true", help="only the real-data part")
    parser.add_argument("--skip-quality", action="store_true", help="only the throughput part")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sizes = replace(sizes, **{key: value for key, value in (
        ("epochs", args.epochs), ("speed_epochs", args.speed_epochs),
        ("pretrain_epochs", args.pretrain_epochs)) if value is not None})
    if sizes.speed_epochs < 2:
        parser.error("--speed-epochs must be at least 2 (epoch 1 fills the cache; epochs 2+ are timed)")
    if args.data is None:
        args.data = DEFAULT_DATA.with_name(DEFAULT_DATA.name + "_quick") if args.quick else DEFAULT_DATA
    if args.out is None:
        args.out = Path("outputs/backbones") / time.strftime("%Y%m%d-%H%M%S")
    args.sizes = sizes
    return args


def describe(vit: dict) -> str:
    patch, side = vit["patch_size"], vit["image_size"]
    return (f"{vit['num_hidden_layers']} layers, width {vit['hidden_size']}, {patch}x{patch} patches of "
            f"{side}x{side}")


def report(outcome: dict, argv: list[str]) -> str:
    lines = [f"torch {torch.__version__}, CPU, {outcome['threads']} threads"
             + ("; --quick: the figures mean nothing" if outcome["quick"] else ""), ""]
    speed = outcome.get("speed")
    if speed:
        fit = speed["fits"]["cached"]
        vit = speed["vit"]
        lines += [f"throughput: synthetic data, {fit['train_samples']} train / {fit['val_samples']} val "
                  f"samples, modality=[image,vector], a frozen untrained ViT ({describe(vit)}), "
                  f"{len(fit['epochs'])} epochs", "",
                  speed_table(speed), ""]
    quality = outcome.get("quality")
    if quality:
        dataset, pre = quality["dataset"], quality["pretraining"]
        vit = pre["vit"]
        lines += [f"spoken digits: {dataset['train']} train / {dataset['test']} test pairs, test voices "
                  f"unseen; {HEADERS_NOTE}. The ViT: {describe(vit)}; SimCLR {pre['epochs']} epochs, "
                  f"batch {pre['batch']}, NT-Xent {pre['loss_first']:.2f} -> "
                  f"{pre['loss_last']:.2f}, {pre['seconds']:.0f} s", "", table(quality["rows"]), "",
                  "train s: the whole mmae-train command; for the pretrained ViT's features row, the "
                  "pre-training. ViT rows: the linear probe on the backbone's mean-pooled tokens.",
                  verdict(quality["rows"]),
                  f"time: CNN route {quality['runs']['mmae-cnn']['seconds']:.0f} s; ViT route "
                  f"{pre['seconds'] + quality['runs']['mmae-vit']['seconds']:.0f} s "
                  "(pre-training + mmae-train)",
                  ""]
    lines += ["commands:", f"  {shlex.join(['python', 'scripts/bench_backbones.py', *argv])}"]
    if quality:
        lines += [f"  {run['command']}" for run in quality["runs"].values()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the mmae-train runs
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"bench_backbones: {out} is not empty: choose a fresh --out")
    out.mkdir(parents=True, exist_ok=True)
    outcome = {"quick": args.quick, "threads": torch.get_num_threads(), "sizes": asdict(args.sizes),
               "out": str(out)}
    data_seed = 0 if args.seed is None else args.seed
    try:
        if not args.skip_speed:
            outcome["speed"] = bench_speed(args.sizes, out, data_seed)
        if not args.skip_quality:
            outcome["quality"] = bench_quality(args, args.sizes, out, data_seed)
    except (BenchError, EspeakMissing, mmae.MMAEError) as error:
        print(f"bench_backbones: {error}", file=sys.stderr)
        sys.exit(1)
    print(report(outcome, argv))
    write_json(args.json, outcome)


if __name__ == "__main__":
    main()
