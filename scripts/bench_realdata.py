"""mmae on real paired files, against the baselines a sceptic would try first: one table, every
number measured in this run.

    python scripts/bench_realdata.py                                  # default settings (minutes)
    python scripts/bench_realdata.py --epochs 1 --variants            # a quick smoke run, no variants
    python scripts/bench_realdata.py --variants "fusion=attention" "model=vae fusion=mopoe" --json out.json
    python scripts/bench_realdata.py --variants --stream                # the default from shards too
    python scripts/bench_realdata.py --suite                          # every dataset: scripts/bench_suite.py

The data is "spoken digits" (scripts/realdata.py): 8x8 handwritten digit images paired with
the digit's word spoken by espeak-ng, test voices never heard in training, a manifest with
`train` and `test` only, as a user's own data would arrive. It is built once into `--data`.

Rows:
- **mmae default**: the README's manifest command plus the image size and nothing else, so the
  row shows what a new user gets (`--epochs` and `--seed` add `trainer.max_epochs` / `seed`).
- **mmae best variant**: the best of the `--variants` runs (each a list of extra overrides),
  by the mean of the five accuracy columns. It is picked on the test split, so it is an
  optimistic figure; the default row is the honest one.
- **raw-input probe**: the same linear probe on the model's inputs (pixels, log-mel).
- **PCA-k**: the inputs standardised and projected on k principal components, k = mmae's latent
  size: a linear code of the same size learnt without a network.
- **mmae default, from shards** (`--stream`): the same command with the manifest first written
  to LitData shards by `mmae-shard` and read with `data=stream`; it should match the default
  row up to the shuffle order (the shards' stored statistics replace the fitting pass).
- **per-modality AEs**: one mmae autoencoder per modality (`modality=[image]`, `modality=[audio]`),
  the question being whether training the modalities jointly buys anything. Its "probe all" is
  the two codes side by side; its cross-modal columns bridge the two latent spaces with a ridge
  regression fitted on the training codes, then decode with the target autoencoder.

Columns (test accuracy on 10 digits; chance is 10%):
- **probe all / image only / audio only**: a linear probe (StandardScaler + logistic regression)
  fitted on training codes (from both modalities, or from one), scored on test codes.
- **image from audio / audio from image**: cross-modal coherence. The model imputes one
  modality from the other alone; a classifier fitted on the *real* training features of the
  imputed modality (pixels; log-mel from the model's own preprocessing) classifies the imputed
  test features. High means the generated image (sound) shows (says) the right digit.
- **train s**: wall seconds of the whole `mmae-train` command (start-up and export included).

Below the table: the default run's whole `mmae-train` time against a plain PyTorch loop over
pre-decoded tensors (the same model, objective, modality dropout, optimizer, batch size and
epochs, no validation, decoding not timed): the price of everything else mmae does.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import mmae

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from peer_mlp import train_peer  # noqa: E402  (sibling scripts)
from realdata import EspeakMissing, build_spoken_digits  # noqa: E402
from time_to_accuracy import FRACTION, time_to_fraction, training_history  # noqa: E402

DEFAULT_DATA = Path("outputs/realdata/spoken_digits")
DEFAULT_VARIANTS = ("fusion=concat", "model=vae fusion=poe")
BOTH = ("image", "audio")
BATCH = 256
COLUMNS = ("probe_all", "image_only", "audio_only", "image_from_audio", "audio_from_image")
HEADERS = ("probe all", "image only", "audio only", "image from audio", "audio from image", "train s",
           "t95 s")
#: The probe columns and the modalities each one encodes.
PROBES = (("probe_all", BOTH), ("image_only", ("image",)), ("audio_only", ("audio",)))
PAIRS = (("image", "audio"), ("audio", "image"))  # (target, source) of the coherence columns



class BenchError(RuntimeError):
    """A training run or the dataset failed; the message says which and why."""


# --------------------------------------------------------------------------- training runs


@dataclass
class Run:
    """One `mmae-train` command and what it left behind."""

    name: str
    modalities: tuple[str, ...]
    overrides: list[str]
    folder: Path
    args: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def command(self) -> str:
        return shlex.join(["mmae-train", *self.args])


def modality_args(modalities: tuple[str, ...]) -> list[str]:
    """The modalities and the image size (the digits are 8x8, not the default 28x28)."""
    size = ["modality.image.size=8"] if "image" in modalities else []
    return [f"modality=[{','.join(modalities)}]", *size]


def train_args(manifest: Path, modalities: tuple[str, ...], folder: Path, extra: list[str],
               shards: Path | None = None) -> list[str]:
    """The README's manifest command (or, given `shards`, its `data=stream` form): the data, the
    modalities, the image size, the output directory (the default CSV log gives the time-to-
    accuracy its history); then `extra`."""
    data = (["data=manifest", f"data.path={manifest}"] if shards is None
            else ["data=stream", f"data.path={shards}"])
    return [*data, *modality_args(modalities), f"paths.output_dir={folder}", *extra]


def write_shards(manifest: Path, output: Path) -> float:
    """`mmae-shard` on the manifest, with the default run's modality settings; its seconds."""
    if output.exists():
        raise BenchError(f"{output} exists: choose a fresh --runs directory")
    command = [sys.executable, "-m", "mmae.cli.shard", "data=manifest", f"data.path={manifest}",
               *modality_args(BOTH), f"output={output}"]
    print(f"[shards] {shlex.join(['mmae-shard', *command[3:]])}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"mmae-shard failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, progress-bar carriage returns counted as line ends."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    kept = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    return "\n".join(kept[-lines:])


def train(run: Run) -> Run:
    """Run `python -m mmae.train` for `run`, timing the whole command; logs go beside its folder."""
    if run.folder.exists():
        raise BenchError(f"{run.folder} exists: choose a fresh --runs directory")
    run.folder.parent.mkdir(parents=True, exist_ok=True)
    out, err = run.folder.with_suffix(".out.log"), run.folder.with_suffix(".err.log")
    print(f"[{run.name}] {run.command}", flush=True)
    start = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        result = subprocess.run([sys.executable, "-m", "mmae.train", *run.args], stdout=stdout,
                                stderr=stderr, check=False)
    run.seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"run '{run.name}' failed (exit {result.returncode}) after {run.seconds:.0f} s:\n"
                         f"  {run.command}\n--- stderr tail ({err}) ---\n{tail(err)}")
    print(f"[{run.name}] {run.seconds:.0f} s", flush=True)
    return run


# --------------------------------------------------------------------------------- data


@dataclass
class Split:
    """One split's raw inputs, as the encoder takes them, and labels."""

    image: torch.Tensor  # [N, 1, 8, 8] in [0, 1]
    audio: torch.Tensor  # [N, 16000]
    labels: np.ndarray

    def raw(self, *names: str) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in names}


def load_splits(manifest: Path, names: tuple[str, ...] = ("train", "test")) -> dict[str, Split]:
    """The splits `names` read straight from the files (Pillow, soundfile), independent of how
    mmae itself reads a manifest, so the probes see exactly the split the manifest declares."""
    import soundfile
    from PIL import Image

    rows: dict[str, list[dict]] = {"train": [], "test": []}
    with manifest.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["split"], []).append(row)
    splits = {}
    for name in names:
        images, waves = [], []
        for row in rows[name]:
            with Image.open(manifest.parent / row["image"]) as image:
                images.append(np.asarray(image, dtype=np.float32)[None] / 255.0)
            wave, _ = soundfile.read(manifest.parent / row["audio"], dtype="float32")
            waves.append(wave)
        labels = np.array([int(row["label"]) for row in rows[name]])
        splits[name] = Split(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(waves)), labels)
    return splits


def batched(function, inputs: dict[str, torch.Tensor]) -> list:
    """`function` over `inputs` in batches (memory stays small for audio)."""
    size = len(next(iter(inputs.values())))
    return [function({k: v[i: i + BATCH] for k, v in inputs.items()}) for i in range(0, size, BATCH)]


def flat(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().flatten(1).cpu().numpy()


# ------------------------------------------------------------------------------- probes


def classifier(components: int | None = None, seed: int = 0):
    """StandardScaler + logistic regression, optionally after standardised PCA."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = [StandardScaler(), LogisticRegression(max_iter=2000)]
    if components is None:
        return make_pipeline(*head)
    return make_pipeline(StandardScaler(), PCA(components, random_state=seed), *head)


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
          components: int | None = None, seed: int = 0) -> float:
    return float(classifier(components, seed).fit(train_x, train_y).score(test_x, test_y))


class RealFeatureClassifiers:
    """Classifiers of real training features, which judge imputed features. Runs with the same
    preprocessing share training features, so each distinct set is fitted once."""

    def __init__(self, labels: np.ndarray):
        self.labels = labels
        self.fitted: dict[str, object] = {}

    def get(self, features: np.ndarray):
        key = hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest()
        if key not in self.fitted:
            self.fitted[key] = classifier().fit(features, self.labels)
        return self.fitted[key]

    def accuracy(self, train_features: np.ndarray, imputed: np.ndarray, labels: np.ndarray) -> float:
        return float(self.get(train_features).score(imputed, labels))


def features(model: mmae.MultimodalAutoencoder, split: Split, name: str) -> np.ndarray:
    """A modality's real features as `model` reconstructs them (pixels, log-mel), flattened."""
    parts = batched(lambda raw: flat(model.encoder.preprocess(raw)[name]), split.raw(name))
    return np.concatenate(parts)


def codes(encoder, split: Split, *names: str) -> np.ndarray:
    return np.concatenate(batched(lambda raw: flat(encoder(raw)), split.raw(*names)))


# ---------------------------------------------------------------------------- evaluations


def evaluate_joint(run: Run, data: dict[str, Split], judges: dict[str, RealFeatureClassifiers]) -> dict:
    """Probes of the exported encoder's codes, and cross-modal coherence of the full model."""
    encoder = mmae.load_encoder(run.folder / "encoder")
    model = mmae.load_checkpoint_model(run.folder / "checkpoints" / "best.ckpt")
    train, test = data["train"], data["test"]
    result = {column: probe(codes(encoder, train, *names), train.labels, codes(encoder, test, *names),
                            test.labels) for column, names in PROBES}
    for target, source in PAIRS:
        imputed = np.concatenate(batched(lambda raw, t=target: flat(mmae.impute(model, raw)[t]),
                                         test.raw(source)))
        result[f"{target}_from_{source}"] = judges[target].accuracy(
            features(model, train, target), imputed, test.labels)
    t95 = time_to_fraction(training_history(run.folder), FRACTION)
    return {**result, "train_s": run.seconds, "t95_s": t95, "latent_dim": encoder.latent_dim}


def evaluate_peer(manifest: Path, data: dict[str, Split], seed: int) -> dict:
    """The peer MLP autoencoder (scripts/peer_mlp.py), timed from reading its training files;
    its coherence judges are fitted on its own features of the real training data."""
    peer = train_peer(lambda: load_splits(manifest, ("train",))["train"].raw(*BOTH), seed=seed)
    train, test = data["train"], data["test"]
    result = {column: probe(flat(peer.encode(train.raw(*names))), train.labels,
                            flat(peer.encode(test.raw(*names))), test.labels) for column, names in PROBES}
    judges = RealFeatureClassifiers(train.labels)
    for target, source in PAIRS:
        real = flat(peer.features(train.raw(target))[target])
        result[f"{target}_from_{source}"] = judges.accuracy(real, flat(peer.impute(target, test.raw(source))),
                                                            test.labels)
        result[f"judge_{target}"] = judges.accuracy(real, flat(peer.features(test.raw(target))[target]),
                                                    test.labels)
    return {**result, "train_s": peer.seconds, "t95_s": time_to_fraction(peer.history, FRACTION)}


def evaluate_separate(runs: dict[str, Run], data: dict[str, Split],
                      judges: dict[str, RealFeatureClassifiers]) -> dict:
    """One autoencoder per modality: probes of their codes (side by side for "all"), and
    coherence through a ridge map from one latent space to the other."""
    from sklearn.linear_model import Ridge

    train, test = data["train"], data["test"]
    encoders = {name: mmae.load_encoder(run.folder / "encoder") for name, run in runs.items()}
    models = {name: mmae.load_checkpoint_model(run.folder / "checkpoints" / "best.ckpt")
              for name, run in runs.items()}
    seen = {name: codes(encoders[name], train, name) for name in runs}
    unseen = {name: codes(encoders[name], test, name) for name in runs}
    result = {"probe_all": probe(np.hstack([seen["image"], seen["audio"]]), train.labels,
                                 np.hstack([unseen["image"], unseen["audio"]]), test.labels),
              "image_only": probe(seen["image"], train.labels, unseen["image"], test.labels),
              "audio_only": probe(seen["audio"], train.labels, unseen["audio"], test.labels)}
    for target, source in (("image", "audio"), ("audio", "image")):
        bridge = Ridge(alpha=1.0).fit(seen[source], seen[target])
        code = torch.from_numpy(bridge.predict(unseen[source]).astype(np.float32))
        model = models[target]
        with torch.no_grad():
            decoded = model.modalities[target].as_features(model.decoder(code)[target])
        result[f"{target}_from_{source}"] = judges[target].accuracy(
            features(model, train, target), flat(decoded), test.labels)
    return {**result, "train_s": sum(run.seconds for run in runs.values())}


def evaluate_inputs(model: mmae.MultimodalAutoencoder, data: dict[str, Split], latent_dim: int, seed: int,
                    judges: dict[str, RealFeatureClassifiers]) -> tuple[dict, dict]:
    """The raw-input probe and PCA-k probe: pixels, log-mel (the model's preprocessing) and both.
    The single-modality raw probes are the coherence judges themselves (same fit, test inputs)."""
    train, test = data["train"], data["test"]
    seen = {name: features(model, train, name) for name in ("image", "audio")}
    unseen = {name: features(model, test, name) for name in ("image", "audio")}
    seen["all"], unseen["all"] = (np.hstack([part["image"], part["audio"]]) for part in (seen, unseen))
    raw = {"probe_all": probe(seen["all"], train.labels, unseen["all"], test.labels),
           "image_only": judges["image"].accuracy(seen["image"], unseen["image"], test.labels),
           "audio_only": judges["audio"].accuracy(seen["audio"], unseen["audio"], test.labels)}
    reduced = {column: probe(seen[name], train.labels, unseen[name], test.labels, latent_dim, seed)
               for column, name in (("probe_all", "all"), ("image_only", "image"), ("audio_only", "audio"))}
    return raw, reduced


# ---------------------------------------------------------------------------- plain loop


def plain_loop_seconds(run: Run) -> float:
    """Seconds of a hand-written training loop with `run`'s model, objective, corruption,
    optimizer, schedule, batch size and epochs, over the training split decoded beforehand
    (decoding and statistics fitting are not timed)."""
    from mmae.config import compose_config
    from mmae.config.assembly import build_module
    from mmae.core.objectives import Step
    from mmae.data.batch import collate

    cfg = compose_config("train", run.args)
    torch.manual_seed(cfg.seed)
    module, datamodule = build_module(cfg)
    train_split = datamodule.dataset("train")
    data = collate([train_split[i] for i in range(len(train_split))])
    model, objective, corruption = module.model, module.objective, module.corruption
    optimizer = module.optimizer_factory(params=model.parameters())
    scheduler = module.scheduler_factory(optimizer=optimizer) if module.scheduler_factory else None
    names, rows, size = list(model.modalities), len(data), cfg.data.batch_size
    model.train()
    step = 0
    start = time.perf_counter()
    for _ in range(cfg.trainer.max_epochs):
        order = torch.randperm(rows)
        for begin in range(0, rows, size):
            picked = order[begin:begin + size]
            present = {n: data.present[n][picked] for n in names}
            inputs = model.encoder.preprocess({n: data.inputs[n][picked] for n in names})
            seen, seen_present = corruption(inputs, present, modalities=model.modalities)
            output = model(seen, seen_present,
                           unimodal_present=present if objective.needs_unimodal_codes else None)
            loss = objective(Step(model.modalities, output, inputs, present, inputs=seen, global_step=step,
                                  likelihoods=model.decoder.likelihoods)).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if scheduler is not None:
            scheduler.step()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------- output


def mean_accuracy(row: dict) -> float:
    return float(np.mean([row[c] for c in COLUMNS]))


def table(rows: dict[str, dict]) -> str:
    """Markdown, one line per row (its `method` label): accuracies in %, missing cells as '-'."""
    lines = ["| method | " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * len(HEADERS)]
    for row in rows.values():
        cells = [f"{100 * row[c]:.1f}" if row.get(c) is not None else "-" for c in COLUMNS]
        cells += [f"{row[key]:.0f}" if row.get(key) is not None else "-" for key in ("train_s", "t95_s")]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"dataset folder, built there if needed (default {DEFAULT_DATA})")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the training runs go (default outputs/realdata/runs/<time>)")
    parser.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS),
                        help="extra override strings, one run each (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="trainer.max_epochs for every run (default: the config's)")
    parser.add_argument("--seed", type=int, default=None,
                        help="dataset seed, also passed as seed=N to every run (default: dataset 0, "
                             "mmae's own default seed)")
    parser.add_argument("--stream", action="store_true",
                        help="also train the default from LitData shards (mmae-shard, data=stream)")
    parser.add_argument("--no-peer", dest="peer", action="store_false",
                        help="leave out the peer MLP autoencoder (scripts/peer_mlp.py)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return parser.parse_args(argv)


def plan_runs(args: argparse.Namespace, manifest: Path,
              runs_root: Path) -> tuple[list[Run], dict[str, Run], Run | None]:
    """The joint runs (default first, then one per variant), one run per modality and, with
    `--stream`, the default from shards (`runs_root/shards`)."""
    extra = ([] if args.epochs is None else [f"trainer.max_epochs={args.epochs}"]) + (
        [] if args.seed is None else [f"seed={args.seed}"])

    def make(name: str, modalities: tuple[str, ...], overrides: list[str], shards: Path | None = None) -> Run:
        folder = runs_root / name
        return Run(name, modalities, overrides, folder,
                   train_args(manifest, modalities, folder, [*overrides, *extra], shards))

    joint = [make("mmae-default", BOTH, [])]
    joint += [make(f"variant-{i}-" + re.sub(r"[^A-Za-z0-9]+", "_", v).strip("_"), BOTH, shlex.split(v))
              for i, v in enumerate(args.variants, start=1)]
    stream = make("mmae-default-stream", BOTH, [], runs_root / "shards") if args.stream else None
    return joint, {name: make(f"{name}-ae", (name,), []) for name in BOTH}, stream


def evaluate_all(joint: list[Run], separate: dict[str, Run], data: dict[str, Split],
                 seed: int, stream: Run | None = None, peer: dict | None = None) -> tuple[dict, dict]:
    """Every row of the table (keyed by a stable id, `method` its label) and each joint run's numbers."""
    judges = {name: RealFeatureClassifiers(data["train"].labels) for name in BOTH}
    results = {run.name: evaluate_joint(run, data, judges) for run in [*joint, *([stream] if stream else [])]}
    default = results[joint[0].name]
    latent_dim = default["latent_dim"]
    default_model = mmae.load_checkpoint_model(joint[0].folder / "checkpoints" / "best.ckpt")
    raw, reduced = evaluate_inputs(default_model, data, latent_dim, seed, judges)
    rows = {"mmae_default": {"method": "mmae default", **default}}
    if len(joint) > 1:
        best = max(joint[1:], key=lambda run: mean_accuracy(results[run.name]))
        rows["mmae_best_variant"] = {"method": f"mmae best variant (`{' '.join(best.overrides)}`)",
                                     "overrides": best.overrides, **results[best.name]}
    if stream is not None:
        rows["mmae_default_stream"] = {"method": "mmae default, from shards", **results[stream.name]}
    rows["raw_input_probe"] = {"method": "raw-input probe", **raw}
    rows["pca_probe"] = {"method": f"PCA-{latent_dim} probe", **reduced}
    rows["per_modality_aes"] = {"method": "per-modality AEs", **evaluate_separate(separate, data, judges)}
    if peer is not None:
        rows["peer_mlp"] = {"method": "peer MLP AE ([256, 128], batch 64, 100 epochs)", **peer}
    return rows, results


def bench(args: argparse.Namespace) -> dict:
    """Build the data, train every run, evaluate them all; the numbers and the commands."""
    data_seed = 0 if args.seed is None else args.seed
    start = time.perf_counter()
    manifest = build_spoken_digits(args.data, seed=data_seed).resolve()
    build_s = time.perf_counter() - start
    runs_root = (args.runs or Path("outputs/realdata/runs") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    joint, separate, stream = plan_runs(args, manifest, runs_root)
    shard_s = write_shards(manifest, runs_root / "shards") if stream else None
    every = [*joint, *separate.values(), *([stream] if stream else [])]
    for run in every:
        train(run)
    plain_s = plain_loop_seconds(joint[0])
    data = load_splits(manifest)
    peer = evaluate_peer(manifest, data, data_seed) if args.peer else None
    rows, results = evaluate_all(joint, separate, data, data_seed, stream, peer)
    runs = {run.name: {"command": run.command, "seconds": run.seconds, "folder": str(run.folder),
                       **results.get(run.name, {})} for run in every}
    return {"rows": rows, "runs": runs, "shard_s": shard_s,
            "overhead": {"mmae_train_s": joint[0].seconds, "plain_loop_s": plain_s,
                         "ratio": joint[0].seconds / plain_s},
            "dataset": {"manifest": str(manifest), "seed": data_seed, "build_s": build_s,
                        "train": len(data["train"].labels), "test": len(data["test"].labels)},
            "variants_by_mean_accuracy": {" ".join(run.overrides): mean_accuracy(results[run.name])
                                          for run in joint[1:]}}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def report(outcome: dict, argv: list[str]) -> str:
    dataset = outcome["dataset"]
    lines = [f"spoken digits: {dataset['train']} train / {dataset['test']} test pairs, test voices unseen "
             f"in training; test accuracy in % (chance 10%)", "", table(outcome["rows"]), "",
             "per-modality AEs: 'probe all' is both codes side by side; cross-modal columns map one latent "
             "space to the other (ridge on training codes) and decode with the target's autoencoder", ""]
    overhead = outcome["overhead"]
    peer = outcome["rows"].get("peer_mlp")
    if peer is not None:
        default = outcome["rows"]["mmae_default"]
        ratio = default["train_s"] / peer["train_s"]
        lines += [f"time: whole `mmae-train` (default) {default['train_s']:.0f} s, the peer MLP AE's whole "
                  f"(files, features, training) {peer['train_s']:.0f} s: {ratio:.2f}x; "
                  f"t95 (training seconds until the validation loss made {FRACTION:.0%} of its own drop) "
                  f"{_seconds(default['t95_s'])} against {_seconds(peer['t95_s'])}. The peer's coherence "
                  f"judges (on its own 40x32 log-mel) score {100 * peer['judge_image']:.1f}% / "
                  f"{100 * peer['judge_audio']:.1f}% on real test images / audio", ""]
    lines += [f"whole `mmae-train` (default) {overhead['mmae_train_s']:.0f} s against a plain PyTorch loop "
              f"over pre-decoded tensors, same model and epochs, {overhead['plain_loop_s']:.0f} s: "
              f"{overhead['ratio']:.2f}x", ""]
    if outcome.get("shard_s") is not None:
        stream = outcome["runs"]["mmae-default-stream"]
        lines += [f"shards: mmae-shard {outcome['shard_s']:.0f} s, then `mmae-train data=stream` "
                  f"{stream['seconds']:.0f} s (the manifest default: {overhead['mmae_train_s']:.0f} s)", ""]
    if outcome["variants_by_mean_accuracy"]:
        tried = ", ".join(f"`{k}` {100 * v:.1f}" for k, v in outcome["variants_by_mean_accuracy"].items())
        lines += [f"variants (mean of the accuracy columns; best picked on test): {tried}", ""]
    lines += ["commands:", f"  {shlex.join(['python', 'scripts/bench_realdata.py', *argv])}",
              f"  python scripts/realdata.py {shlex.quote(str(Path(dataset['manifest']).parent))} "
              f"--seed {dataset['seed']}"]
    lines += [f"  {run['command']}" for run in outcome["runs"].values()]
    return "\n".join(lines)


def write_json(path: Path | None, outcome: dict) -> None:
    """The figures of a benchmark run as JSON, where `--json` asked for them."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(outcome, indent=2, default=str), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--suite" in argv:  # every dataset of the suite: scripts/bench_suite.py
        import bench_suite

        bench_suite.main([a for a in argv if a != "--suite"])
        return
    args = parse_args(argv)
    try:
        outcome = bench(args)
    except (BenchError, EspeakMissing, mmae.MMAEError) as error:
        print(f"bench_realdata: {error}", file=sys.stderr)
        sys.exit(1)
    print(report(outcome, argv))
    write_json(args.json, outcome)


if __name__ == "__main__":
    main()
