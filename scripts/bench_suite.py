"""The real-data suite: every dataset of scripts/realdata_suite.py through the README's command,
against baselines measured in the same run; one table per dataset.

    python scripts/bench_realdata.py --suite                               # every dataset, 3 seeds
    python scripts/bench_realdata.py --suite letters --seeds 42 --variants "objective=aligned"
    python scripts/bench_realdata.py --suite --baselines raw pca           # fewer baselines

Rows (per dataset):
- **mmae default**: `mmae-train data=manifest data.path=MANIFEST <the dataset's overrides>`, nothing
  else (`seed=N` for each of `--seeds`; mean ± standard deviation over the seeds).
- **mmae `<variant>`**: the same command plus the variant's overrides, over the same seeds.
- **raw-input probe**: the probe on the inputs themselves: pixels, log-mel (the model's own
  preprocessing), character 1-3-gram TF-IDF of the text, a table's numbers with its categories
  one-hot. "all" stacks them, a missing modality's block at its training mean plus a flag.
- **PCA-k**: the same inputs standardised and projected on k = mmae's latent size components.
- **per-modality AEs**: one `mmae-train` per modality; "all" is their codes side by side, and a
  coherence column maps the source's code to the target's (ridge on training codes) and decodes
  it with the target's autoencoder.
- **contrastive**: a coordinated baseline without decoders: one MLP per modality on the
  standardised raw inputs, trained with symmetric InfoNCE between the modalities of a sample
  (CLIP-style); "all" is the mean of the present modalities' normalised codes.
- **supervised (ceiling)**: mmae's own encoder of each modality with a linear head, trained on the
  labels: what that architecture can read from the modality alone.
- **judge on real data**: the coherence judge's accuracy on the real target of the same test rows.

Columns: the linear probe (StandardScaler + logistic regression fitted on the training split,
scored on test) from every modality present and from each modality alone (rows that hold it);
coherence `t from s`: the model imputes t from s alone (test rows holding both) and the judge,
the raw-input probe of t fitted on real training data, classifies it; train seconds; parameters.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path

import numpy as np
import torch
from torch import nn

import mmae
from mmae.data.manifest import ManifestDataset

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from realdata_suite import SUITE, DatasetSpec  # noqa: E402  (sibling scripts)
from time_to_accuracy import FRACTION, time_to_fraction, training_history  # noqa: E402

DEFAULT_SEEDS = (42, 1, 2)
BASELINES = ("raw", "pca", "aes", "contrastive", "supervised")
BATCH = 256
DATA_ROOT = Path("outputs/realdata")


class SuiteError(RuntimeError):
    """A run or a dataset of the suite failed; the message says which and why."""


# --------------------------------------------------------------------------- training runs


@dataclass
class Run:
    name: str
    args: list[str]
    folder: Path
    seconds: float = 0.0

    @property
    def command(self) -> str:
        return shlex.join(["mmae-train", *self.args])


def train(run: Run, threads: int | None = None, reuse: bool = False) -> Run:
    """`python -m mmae.train` for `run`, timed; its logs beside its folder. `threads` caps
    torch's threads (runs side by side, one thread each, do not stall one another); `reuse`
    takes a finished run of the same folder as it is (its seconds as they were measured)."""
    seconds = run.folder.with_suffix(".seconds")
    if reuse and seconds.exists() and (run.folder / "metrics.json").exists():
        run.seconds = float(seconds.read_text())
        print(f"[{run.name}] reused ({run.seconds:.0f} s when trained)", flush=True)
        return run
    if run.folder.exists():
        raise SuiteError(f"{run.folder} exists: choose a fresh --runs directory")
    run.folder.parent.mkdir(parents=True, exist_ok=True)
    out, err = run.folder.with_suffix(".out.log"), run.folder.with_suffix(".err.log")
    print(f"[{run.name}] {run.command}", flush=True)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        result = subprocess.run([sys.executable, "-m", "mmae.train", *run.args], stdout=stdout,
                                stderr=stderr, check=False, env=env)
    run.seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = "\n".join(err.read_text(errors="replace").splitlines()[-30:])
        raise SuiteError(f"run '{run.name}' failed (exit {result.returncode}):\n  {run.command}\n{tail}")
    seconds.write_text(f"{run.seconds:.3f}")
    print(f"[{run.name}] {run.seconds:.0f} s", flush=True)
    return run


def single_modality_overrides(spec: DatasetSpec, name: str) -> list[str]:
    """The dataset's overrides for an autoencoder of `name` alone: its modality list replaced,
    the other modalities' settings dropped."""
    others = [m for m in spec.modalities if m != name]
    kept = [o for o in spec.train_overrides
            if not o.startswith("modality=") and not any(o.startswith(f"modality.{m}.") for m in others)]
    return [f"modality=[{name}]", *kept]


# --------------------------------------------------------------------------------- data


@dataclass
class Split:
    """One split as mmae reads it: raw inputs (zeros where missing), presence, class indices."""

    raw: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    labels: np.ndarray

    def rows(self, *names: str) -> torch.Tensor:
        """The rows holding every one of `names`."""
        return torch.stack([self.present[n] for n in names], dim=1).all(dim=1)


def load_split(manifest: Path, model: mmae.MultimodalAutoencoder, split: str) -> Split:
    dataset = ManifestDataset(manifest, model.modalities, split=split, val_fraction=0.0, cache=False)
    samples = list(dataset.decoded())
    names = list(model.modalities)
    return Split({n: torch.stack([s["inputs"][n] for s in samples]) for n in names},
                 {n: torch.stack([s["present"][n] for s in samples]) for n in names},
                 np.array([int(s["label"]) for s in samples]))


def batched(function, inputs: dict[str, torch.Tensor]) -> list:
    size = len(next(iter(inputs.values())))
    return [function({k: v[i:i + BATCH] for k, v in inputs.items()}) for i in range(0, size, BATCH)]


def features(model: mmae.MultimodalAutoencoder, split: Split, name: str) -> torch.Tensor:
    """A modality's features (pixels, log-mel, token ids, a table's row) for every row."""
    with torch.no_grad():
        return torch.cat(batched(lambda raw: model.encoder.preprocess(raw)[name], {name: split.raw[name]}))


# ------------------------------------------------------------------------ input views


class View:
    """How the baselines read one modality's features: a dense matrix per sample. Fitted on the
    training rows (TF-IDF vocabulary, category counts, standardisation)."""

    def __init__(self, modality):
        self.modality = modality
        self.kind = type(modality).__name__

    def _dense(self, x: torch.Tensor) -> np.ndarray:
        if self.kind == "TextModality":
            return self.tfidf.transform(self.modality.decode(x.long())).toarray().astype(np.float32)
        if self.kind == "TabularModality":
            numeric = x[:, :len(self.modality.numeric)].numpy()
            codes = x[:, len(self.modality.numeric):].long().numpy()
            hot = [np.eye(size + 1, dtype=np.float32)[np.minimum(codes[:, i], size)]
                   for i, size in enumerate(self.sizes)]
            return np.hstack([numeric, *hot]).astype(np.float32)
        return x.float().flatten(1).numpy()

    def fit(self, x: torch.Tensor) -> View:
        if self.kind == "TextModality":
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), max_features=4000)
            self.tfidf.fit(self.modality.decode(x.long()))
        if self.kind == "TabularModality":
            codes = x[:, len(self.modality.numeric):].long()
            self.sizes = [int(codes[:, i].max()) + 1 for i in range(codes.shape[1])]
        dense = self._dense(x)
        self.mean, self.std = dense.mean(0), dense.std(0) + 1e-6
        return self

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        """Standardised with the training rows' statistics."""
        return (self._dense(x) - self.mean) / self.std


def filled(view: View, feats: torch.Tensor, present: torch.Tensor) -> np.ndarray:
    """A modality's standardised view, a missing row at 0 (its training mean)."""
    return np.where(present.numpy()[:, None], view(feats), 0.0).astype(np.float32)


def stacked(views: dict[str, View], feats: dict[str, torch.Tensor], split: Split) -> np.ndarray:
    """Every modality's view side by side, a missing one at 0 with a flag."""
    blocks = []
    for name, view in views.items():
        blocks += [filled(view, feats[name], split.present[name]),
                   split.present[name].numpy()[:, None].astype(np.float32)]
    return np.hstack(blocks)


# ------------------------------------------------------------------------------- probes


def classifier(components: int | None = None, seed: int = 0):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = [StandardScaler(), LogisticRegression(max_iter=1000)]
    return make_pipeline(*([PCA(components, random_state=seed)] if components else []), *head)


def probe(train_x, train_y, test_x, test_y, components: int | None = None) -> float:
    if components is not None:  # (a table may have fewer columns than the code has units)
        components = min(components, *train_x.shape)
    return float(classifier(components).fit(train_x, train_y).score(test_x, test_y))


def probe_columns(encode, train: Split, test: Split, names: list[str]) -> dict[str, float]:
    """`encode(split, rows, names) -> codes`: the probe from all modalities and from each alone."""
    every = torch.ones(len(train.labels), dtype=torch.bool), torch.ones(len(test.labels), dtype=torch.bool)
    result = {"all": probe(encode(train, every[0], names), train.labels,
                           encode(test, every[1], names), test.labels)}
    for name in names:
        seen, unseen = train.rows(name), test.rows(name)
        result[name] = probe(encode(train, seen, [name]), train.labels[seen.numpy()],
                             encode(test, unseen, [name]), test.labels[unseen.numpy()])
    return result


class Judges:
    """Per modality, the raw-input probe fitted on the real training rows that hold it: it
    judges imputed features, and its accuracy on real test rows is the ceiling beside them."""

    def __init__(self, views: dict[str, View], train_feats: dict[str, torch.Tensor], train: Split):
        self.views, self.fitted = views, {}
        for name, view in views.items():
            rows = train.present[name].numpy()
            self.fitted[name] = classifier().fit(view(train_feats[name][rows]), train.labels[rows])

    def accuracy(self, name: str, feats: torch.Tensor, labels: np.ndarray) -> float:
        return float(self.fitted[name].score(self.views[name](feats), labels))


def preprocessing(model: mmae.MultimodalAutoencoder) -> str:
    """What decides a model's features (e.g. the log-mel resolution): runs that agree share judges."""
    settings = {n: [type(m).__name__, list(m.shape), {k: str(getattr(m, k, None)) for k in m.feature_keys}]
                for n, m in model.modalities.items()}
    return json.dumps(settings, sort_keys=True)


# ---------------------------------------------------------------------------- evaluations


@dataclass
class Context:
    """What every row of one dataset's table is measured against."""

    spec: DatasetSpec
    manifest: Path
    reference: mmae.MultimodalAutoencoder  # the default run's model: its preprocessing
    train: Split
    test: Split
    feats: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # split -> name -> features
    judges: dict[str, Judges] = field(default_factory=dict)  # by preprocessing()

    def judges_of(self, model: mmae.MultimodalAutoencoder) -> Judges:
        """The judges in `model`'s feature space, fitted on its features of the real training rows
        the first time a preprocessing is met (the reference's are fitted by `bench_dataset`)."""
        key = preprocessing(model)
        if key not in self.judges:
            feats = {n: features(model, self.train, n) for n in self.names}
            views = {n: View(model.modalities[n]).fit(feats[n][self.train.rows(n)]) for n in self.names}
            self.judges[key] = Judges(views, feats, self.train)
        return self.judges[key]

    def judged_on_real(self, model: mmae.MultimodalAutoencoder) -> dict[str, float]:
        """Per coherence column, `model`'s judge of the target on the real test rows."""
        judges, real = self.judges_of(model), {}
        for target, source in self.pairs():
            rows = self.test.rows(target, source)
            feats = torch.cat(batched(lambda raw, t=target: model.encoder.preprocess(raw)[t],
                                      {target: self.test.raw[target][rows]}))
            labels = self.test.labels[rows.numpy()]
            real[coherence_key(target, source)] = judges.accuracy(target, feats, labels)
        return real

    @property
    def names(self) -> list[str]:
        return list(self.spec.modalities)

    def pairs(self) -> list[tuple[str, str]]:
        """(target, source) for every ordered pair of modalities."""
        return list(permutations(self.names, 2))


def coherence_key(target: str, source: str) -> str:
    return f"{target}<-{source}"


def evaluate_mmae(run: Run, ctx: Context) -> dict:
    encoder = mmae.load_encoder(run.folder / "encoder")
    model = mmae.load_checkpoint_model(run.folder / "checkpoints" / "best.ckpt")
    judges = ctx.judges_of(model)

    def encode(split: Split, rows: torch.Tensor, names: list[str]) -> np.ndarray:
        raw = {n: split.raw[n][rows] for n in names}
        present = {n: split.present[n][rows] for n in names}
        return np.concatenate([encoder({n: x[i:i + BATCH] for n, x in raw.items()},
                                       present={n: m[i:i + BATCH] for n, m in present.items()}).numpy()
                               for i in range(0, int(rows.sum()), BATCH)])

    result = probe_columns(encode, ctx.train, ctx.test, ctx.names)
    for target, source in ctx.pairs():
        rows = ctx.test.rows(target, source)
        imputed = torch.cat(batched(lambda raw, t=target: mmae.impute(model, raw)[t],
                                    {source: ctx.test.raw[source][rows]}))
        result[coherence_key(target, source)] = judges.accuracy(target, imputed,
                                                                ctx.test.labels[rows.numpy()])
    t95 = time_to_fraction(training_history(run.folder), FRACTION)
    parameters = sum(p.numel() for p in model.parameters())
    return {**result, "train_s": run.seconds, "t95_s": t95, "parameters": parameters}


def evaluate_inputs(ctx: Context, views: dict[str, View], judges: Judges, k: int) -> tuple[dict, dict, dict]:
    """The raw-input probe, the PCA-k probe and the judges' accuracy on the real test rows."""
    train, test = ctx.train, ctx.test
    seen, unseen = stacked(views, ctx.feats["train"], train), stacked(views, ctx.feats["test"], test)
    raw = {"all": probe(seen, train.labels, unseen, test.labels)}
    reduced = {"all": probe(seen, train.labels, unseen, test.labels, components=k)}
    for name, view in views.items():
        seen, unseen = train.rows(name).numpy(), test.rows(name).numpy()
        raw[name] = judges.accuracy(name, ctx.feats["test"][name][unseen], test.labels[unseen])
        reduced[name] = probe(view(ctx.feats["train"][name][seen]), train.labels[seen],
                              view(ctx.feats["test"][name][unseen]), test.labels[unseen], components=k)
    return raw, reduced, ctx.judged_on_real(ctx.reference)


def evaluate_separate(runs: dict[str, Run], ctx: Context, judges: Judges) -> dict:
    """One autoencoder per modality: their codes side by side, and coherence through a ridge map
    from the source's latent space to the target's."""
    from sklearn.linear_model import Ridge

    encoders = {n: mmae.load_encoder(r.folder / "encoder") for n, r in runs.items()}
    models = {n: mmae.load_checkpoint_model(r.folder / "checkpoints" / "best.ckpt") for n, r in runs.items()}

    def codes(split: Split, name: str) -> np.ndarray:
        return np.concatenate(batched(lambda raw: encoders[name](raw).numpy(), {name: split.raw[name]}))

    seen = {n: codes(ctx.train, n) for n in runs}
    unseen = {n: codes(ctx.test, n) for n in runs}

    def encode(split: Split, rows: torch.Tensor, names: list[str]) -> np.ndarray:
        table = seen if split is ctx.train else unseen
        blocks = [np.where(split.present[n].numpy()[:, None], table[n], 0.0)[rows.numpy()] for n in names]
        flags = [split.present[n].numpy()[rows.numpy(), None] for n in names]
        return np.hstack([*blocks, *flags]).astype(np.float32)

    result = probe_columns(encode, ctx.train, ctx.test, ctx.names)
    for target, source in ctx.pairs():
        both = ctx.train.rows(target, source).numpy()
        bridge = Ridge(alpha=1.0).fit(seen[source][both], seen[target][both])
        rows = ctx.test.rows(target, source).numpy()
        code = torch.from_numpy(bridge.predict(unseen[source][rows]).astype(np.float32))
        model = models[target]
        with torch.no_grad():
            decoded = model.modalities[target].as_features(model.decoder(code)[target])
        result[coherence_key(target, source)] = judges.accuracy(target, decoded, ctx.test.labels[rows])
    parameters = sum(p.numel() for m in models.values() for p in m.parameters())
    return {**result, "train_s": sum(r.seconds for r in runs.values()), "parameters": parameters}


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


def evaluate_contrastive(ctx: Context, views: dict[str, View], latent_dim: int, seed: int,
                         epochs: int = 40, temperature: float = 0.1) -> dict:
    """A coordinated baseline: an MLP per modality on its standardised raw view, trained with
    symmetric InfoNCE between the codes of every pair of modalities a sample holds."""
    from mmae.core.objectives import info_nce

    torch.manual_seed(seed)
    dense = {split: {n: torch.from_numpy(filled(views[n], ctx.feats[split][n], part.present[n]))
                     for n in ctx.names} for split, part in (("train", ctx.train), ("test", ctx.test))}
    nets = nn.ModuleDict({n: _mlp(dense["train"][n].shape[1], 256, latent_dim) for n in ctx.names})
    optimizer = torch.optim.Adam(nets.parameters(), lr=1e-3, weight_decay=1e-4)
    present = ctx.train.present
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(ctx.train.labels))
        for begin in range(0, len(order), BATCH):
            picked = order[begin:begin + BATCH]
            codes = {n: nets[n](dense["train"][n][picked]) for n in ctx.names}
            losses = []
            for first, second in {tuple(sorted(p)) for p in ctx.pairs()}:
                both = present[first][picked] & present[second][picked]
                if int(both.sum()) >= 4:
                    losses.append(info_nce(codes[first][both], codes[second][both], temperature)[0])
            optimizer.zero_grad()
            torch.stack(losses).mean().backward()
            optimizer.step()
    seconds = time.perf_counter() - start

    @torch.no_grad()
    def encode(split: Split, rows: torch.Tensor, names: list[str]) -> np.ndarray:
        which = "train" if split is ctx.train else "test"
        total = torch.zeros(int(rows.sum()), latent_dim)
        count = torch.zeros(int(rows.sum()), 1)
        for n in names:
            mask = split.present[n][rows].float().unsqueeze(1)
            total += mask * nn.functional.normalize(nets[n](dense[which][n][rows]), dim=1)
            count += mask
        return (total / count.clamp_min(1)).numpy()

    result = probe_columns(encode, ctx.train, ctx.test, ctx.names)
    return {**result, "train_s": seconds, "parameters": sum(p.numel() for p in nets.parameters())}


def evaluate_supervised(ctx: Context, seed: int, epochs: int = 15, embed_dim: int = 128) -> dict:
    """mmae's encoder of each modality with a linear head, trained on the labels (cross-entropy,
    AdamW) over the training rows that hold the modality: the ceiling of reading it alone."""
    reference = ctx.reference
    classes = int(max(ctx.train.labels.max(), ctx.test.labels.max())) + 1
    result, seconds, parameters = {}, 0.0, 0
    for name in ctx.names:
        torch.manual_seed(seed)
        standardizer = (copy.deepcopy(reference.encoder.standardizers[name])
                        if name in reference.encoder.standardizers else nn.Identity())
        net = nn.Sequential(standardizer, reference.modalities[name].build_encoder(embed_dim),
                            nn.Linear(embed_dim, classes))
        seen, unseen = ctx.train.rows(name), ctx.test.rows(name)
        x, y = ctx.feats["train"][name][seen], torch.from_numpy(ctx.train.labels[seen.numpy()])
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        start = time.perf_counter()
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(y))
            for begin in range(0, len(order), 64):
                picked = order[begin:begin + 64]
                loss = nn.functional.cross_entropy(net(x[picked]), y[picked])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        seconds += time.perf_counter() - start
        net.eval()
        with torch.no_grad():
            test_x = ctx.feats["test"][name][unseen]
            predicted = torch.cat([net(test_x[i:i + BATCH]).argmax(1) for i in range(0, len(test_x), BATCH)])
        result[name] = float((predicted.numpy() == ctx.test.labels[unseen.numpy()]).mean())
        parameters += sum(p.numel() for p in net.parameters())
    return {**result, "train_s": seconds, "parameters": parameters}


# ------------------------------------------------------------------------------- output


def summarise(results: list[dict]) -> dict:
    """Per column: the mean over seeds, and the standard deviation when there are several."""
    keys = {k for r in results for k, v in r.items() if isinstance(v, (int, float))}
    # (A value may be missing for some seeds: t95 of a run reused from before the CSV log.)
    values = {k: [r[k] for r in results if isinstance(r.get(k), (int, float))] for k in keys}
    summary = {k: float(np.mean(v)) for k, v in values.items()}
    if len(results) > 1:
        summary["spread"] = {k: float(np.std(v)) for k, v in values.items()}
    summary["seeds"] = len(results)
    return summary


def columns(ctx: Context) -> list[tuple[str, str]]:
    probes = [("all", "probe all")] + [(n, f"{n} only") for n in ctx.names]
    return probes + [(coherence_key(t, s), f"{t} from {s}") for t, s in ctx.pairs()]


def table(ctx: Context, rows: dict[str, dict]) -> str:
    cols = columns(ctx)
    lines = ["| method | " + " | ".join(h for _, h in cols) + " | train s | t95 s | parameters |",
             "|---|" + "---:|" * (len(cols) + 3)]
    for label, row in rows.items():
        spread = row.get("spread", {})
        cells = []
        for key, _ in cols:
            value = row.get(key)
            cell = "-" if value is None else f"{100 * value:.1f}"
            if value is not None and key in spread:
                cell += f" ± {100 * spread[key]:.1f}"
            cells.append(cell)
        seconds = " | ".join(f"{row[k]:.0f}" if row.get(k) is not None else "-" for k in ("train_s", "t95_s"))
        parameters = f"{row['parameters'] / 1e6:.2f} M" if row.get("parameters") else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seconds} | {parameters} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_realdata.py --suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="*", default=list(SUITE),
                        help=f"datasets of the suite (default: all of {', '.join(SUITE)})")
    parser.add_argument("--data", type=Path, default=DATA_ROOT,
                        help="where datasets are built (<data>/<name>)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where runs go (default outputs/suite/<time>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--variants", nargs="*", default=[], help="extra override strings, one row each")
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES)
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs for every mmae run")
    parser.add_argument("--limit", type=int, default=None, help="build a stratified subset (smoke runs)")
    parser.add_argument("--reuse", action="store_true",
                        help="take the finished runs already in --runs as they are (to evaluate again)")
    parser.add_argument("--no-default", action="store_true",
                        help="train the variants only (the first one's preprocessing serves the baselines)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="training runs side by side, one torch thread each (default 1: one at a "
                             "time with every thread; train seconds then compare with a user's run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.no_default and not args.variants:
        parser.error("--no-default needs --variants")
    unknown = [name for name in args.datasets if name not in SUITE]
    if unknown:
        parser.error(f"unknown datasets {unknown}; the suite has {list(SUITE)}")
    return args


def bench_dataset(spec: DatasetSpec, args: argparse.Namespace, root: Path) -> tuple[str, dict]:
    manifest = spec.build(args.data / spec.name, seed=0, **({"limit": args.limit} if args.limit else {}))
    manifest = Path(manifest).resolve()
    extra = [] if args.epochs is None else [f"trainer.max_epochs={args.epochs}"]

    def make(name: str, overrides: list[str]) -> Run:
        folder = root / spec.name / name
        return Run(name, ["data=manifest", f"data.path={manifest}", *overrides, f"paths.output_dir={folder}",
                          *extra], folder)

    groups = {} if args.no_default else {
        "mmae default": [make(f"default-s{s}", [*spec.train_overrides, f"seed={s}"]) for s in args.seeds]}
    for i, variant in enumerate(args.variants, start=1):
        groups[f"mmae `{variant}`"] = [make(f"variant{i}-s{s}", [*spec.train_overrides, *shlex.split(variant),
                                                                 f"seed={s}"]) for s in args.seeds]
    separate = ({n: make(f"{n}-ae", single_modality_overrides(spec, n)) for n in spec.modalities}
                if "aes" in args.baselines else {})
    every = [*(r for runs in groups.values() for r in runs), *separate.values()]
    if args.jobs == 1:
        for run in every:
            train(run, reuse=args.reuse)
    else:  # one thread each: their train seconds are single-threaded ones
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda run: train(run, threads=1, reuse=args.reuse), every))

    first = next(iter(groups.values()))[0]  # its preprocessing serves the baselines
    reference = mmae.load_checkpoint_model(first.folder / "checkpoints" / "best.ckpt")
    ctx = Context(spec, manifest, reference, load_split(manifest, reference, "train"),
                  load_split(manifest, reference, "test"))
    ctx.feats = {split: {n: features(reference, getattr(ctx, split), n) for n in ctx.names}
                 for split in ("train", "test")}
    views = {n: View(reference.modalities[n]).fit(ctx.feats["train"][n][ctx.train.rows(n)])
             for n in ctx.names}
    judges = ctx.judges[preprocessing(reference)] = Judges(views, ctx.feats["train"], ctx.train)
    rows = {label: summarise([evaluate_mmae(run, ctx) for run in runs]) for label, runs in groups.items()}
    # Rows whose preprocessing differs from the reference's were judged in their own feature space.
    other_judges = {}
    for label, runs in groups.items():
        model = mmae.load_checkpoint_model(runs[0].folder / "checkpoints" / "best.ckpt")
        if preprocessing(model) != preprocessing(reference):
            other_judges[f"judge on real data ({label.removeprefix('mmae ')})"] = ctx.judged_on_real(model)
    k = reference.latent_dim
    raw, reduced, real = evaluate_inputs(ctx, views, judges, k)
    if "raw" in args.baselines:
        rows["raw-input probe"] = raw
    if "pca" in args.baselines:
        rows[f"PCA-{k} probe"] = reduced
    if separate:
        rows["per-modality AEs"] = evaluate_separate(separate, ctx, judges)
    if "contrastive" in args.baselines:
        rows["contrastive (InfoNCE MLPs)"] = evaluate_contrastive(ctx, views, k, args.seeds[0])
    if "supervised" in args.baselines:
        rows["supervised (ceiling)"] = evaluate_supervised(ctx, args.seeds[0])
    rows["judge on real data"] = real
    rows.update(other_judges)
    chance = 1 / spec.classes
    head = (f"### {spec.name}: {len(ctx.train.labels)} train / {len(ctx.test.labels)} test rows, "
            f"{spec.classes} classes (chance {100 * chance:.1f}%); mmae rows over seeds {args.seeds}\n\n"
            f"{spec.description}\n\n")
    commands = "\n".join(f"    {run.command}" for runs in groups.values() for run in runs[:1])
    text = head + table(ctx, rows) + f"\n\ncommands (first seed):\n{commands}\n"
    return text, {"manifest": str(manifest), "rows": rows, "chance": chance,
                  "commands": {r.name: r.command for runs in groups.values() for r in runs}}


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    root = (args.runs or Path("outputs/suite") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    outcome, texts = {}, []
    for name in args.datasets:
        try:
            text, outcome[name] = bench_dataset(SUITE[name], args, root)
        except (SuiteError, mmae.MMAEError) as error:
            print(f"bench_realdata --suite: {name}: {error}", file=sys.stderr)
            sys.exit(1)
        print(text, flush=True)
        texts.append(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(outcome, indent=2, default=str), encoding="utf-8")
    (root / "suite.md").write_text("\n".join(texts), encoding="utf-8")
