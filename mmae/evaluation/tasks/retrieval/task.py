"""`mmae-eval task=retrieval`: nearest-neighbour retrieval and semantic hashing on the codes.

Codes are compared by cosine after centring each set by the mean of the training codes of
the same input subset (the codes from all modalities, or from one modality alone), which
removes an offset one modality's codes may have against another's. Query = test codes,
database = training codes, relevant = same label:

- within modalities: codes from all modalities on both sides, against the standardised
  inputs and PCA of them to the code size (fitted on the training split);
- across modalities: for each ordered pair A -> B, queries encoded from A alone, database
  from B alone (label retrieval); and same-sample retrieval, where test sample i's A-code
  looks for its own B-code among the test B-codes (recall@k and mean rank; chance is k / N
  and (N + 1) / 2).
- semantic hashing: b-bit codes (for each b in `bits`) as the sign of the projection on the
  top b principal directions of the training set, of the codes (b <= latent size) and of the
  standardised inputs; a run trained with `latent_activation=binary` adds its own ±1 codes.
  Hamming-ball precision within `radius` and mAP@k under Hamming ranking.

The metrics and their definitions are in `mmae.evaluation.tasks.retrieval.ranking`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mmae.core.errors import ConfigError
from mmae.core.registry import EVALUATIONS
from mmae.evaluation.base import EvalContext, Evaluation, TaskResult
from mmae.evaluation.codes import Features
from mmae.evaluation.tasks.retrieval import ranking as rk

CODES_HASH, INPUTS_HASH, BINARY = "codes (sign of PCA-b)", "inputs (sign of PCA-b)", "binary latent"


def _positive_ints(options, name: str, default: list[int]) -> list[int]:
    values = options.get(name, default)
    values = [values] if isinstance(values, int) else list(values)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ConfigError(f"retrieval.{name} must be a list of positive integers, got {values!r}")
    return sorted(set(values))


def _labelled(x, labels) -> tuple[np.ndarray, np.ndarray]:
    labels = rk.as_numpy(labels)
    keep = labels >= 0
    return rk.as_numpy(x)[keep], labels[keep]


def ranking_scores(relevant: np.ndarray, ks: list[int], num_relevant: np.ndarray, database_size: int) -> dict:
    """mAP@k and recall@k for each k of a ranked relevance matrix, and what a random ranking
    would score."""
    chance = {k: rk.chance_scores(num_relevant, database_size, k) for k in ks}
    return {**{f"mAP@{k}": rk.mean_average_precision_at_k(relevant, k, num_relevant) for k in ks},
            **{f"R@{k}": rk.recall_at_k(relevant, k) for k in ks},
            **{f"chance mAP@{k}": chance[k][0] for k in ks}, **{f"chance R@{k}": chance[k][1] for k in ks}}


def label_retrieval(query, query_labels, database, database_labels, ks: list[int], backend: str) -> dict:
    """Cosine label retrieval of unit-row queries in a unit-row database (unlabelled items left out)."""
    query, query_labels = _labelled(query, query_labels)
    database, database_labels = _labelled(database, database_labels)
    ranked = rk.cosine_neighbours(query, database, max(ks), backend)
    return {"queries": len(query), "database": len(database),
            **ranking_scores(rk.relevance(ranked, query_labels, database_labels), ks,
                             rk.num_relevant(query_labels, database_labels), len(database))}


def hash_retrieval(query, query_labels, database, database_labels, ks: list[int], radius: int) -> dict:
    """Hamming-ball precision and Hamming-ranking mAP@k / recall@k of binary codes."""
    query, query_labels = _labelled(query, query_labels)
    database, database_labels = _labelled(database, database_labels)
    precision, empty = rk.hamming_ball_precision(query, database, query_labels, database_labels, radius)
    ranked = rk.hamming_neighbours(query, database, max(ks))
    return {"precision": precision, "empty": empty,
            **ranking_scores(rk.relevance(ranked, query_labels, database_labels), ks,
                             rk.num_relevant(query_labels, database_labels), len(database))}


def same_sample_retrieval(query: Features, database: Features, query_mean, database_mean,
                          ks: list[int]) -> dict:
    """Each query sample's rank of its own code (same id) among the database codes; tied
    codes share their ranks (a random order among them, in expectation)."""
    position = {i: j for j, i in enumerate(database.ids.tolist())}
    rows = [r for r, i in enumerate(query.ids.tolist()) if i in position]
    targets = np.array([position[i] for i in query.ids[rows].tolist()], dtype=np.int64)
    first, last = rk.rank_bounds(rk.unit_rows(query.codes[rows], query_mean),
                                 rk.unit_rows(database.codes, database_mean), targets)
    n = len(database.codes)
    return {"queries": len(rows), "candidates": n,
            **{f"R@{k}": float(rk.expected_hit(first, last, k).mean()) for k in ks},
            **{f"chance R@{k}": min(1.0, k / n) for k in ks},
            "mean_rank": float(rk.expected_rank(first, last).mean()), "chance_mean_rank": (n + 1) / 2}


def _binary_latent(context: EvalContext) -> bool:
    return getattr(context.encoder.encoder, "latent_activation", None) == "binary"


def _within(context: EvalContext, ks: list[int], backend: str) -> dict:
    train, test = context.codes("train"), context.codes("test")
    mean = train.codes.mean(0)
    rows = {"all modalities": label_retrieval(rk.unit_rows(test.codes, mean), test.labels,
                                              rk.unit_rows(train.codes, mean), train.labels, ks, backend)}
    (train_x, train_y), (test_x, test_y) = context.inputs("train"), context.inputs("test")
    train_x, test_x = rk.standardise(train_x, test_x)
    d = context.encoder.latent_dim
    baselines = {"inputs (standardised)": (train_x, test_x),
                 f"PCA-{d} of the inputs": rk.seeded_pca(train_x, test_x, d, context.seed)}
    for name, (database, query) in baselines.items():
        mean = database.mean(0)
        rows[name] = label_retrieval(rk.unit_rows(query, mean), test_y, rk.unit_rows(database, mean),
                                     train_y, ks, backend)
    return rows


def _cross(context: EvalContext, ks: list[int], backend: str) -> dict:
    names = list(context.encoder.modalities)
    train = {m: context.codes("train", [m]) for m in names}
    test = {m: context.codes("test", [m]) for m in names}
    means = {m: train[m].codes.mean(0) for m in names}
    rows = {}
    for a in names:
        for b in names:
            if a == b:
                continue
            rows[f"{a} -> {b}"] = {
                "label": label_retrieval(
                    rk.unit_rows(test[a].codes, means[a]), test[a].labels,
                    rk.unit_rows(train[b].codes, means[b]), train[b].labels, ks, backend),
                "same_sample": same_sample_retrieval(test[a], test[b], means[a], means[b], ks)}
    return rows


def _hashing(context: EvalContext, bits: list[int], ks: list[int], radius: int) -> list[dict]:
    train, test = context.codes("train"), context.codes("test")
    (train_x, train_y), (test_x, test_y) = context.inputs("train"), context.inputs("test")
    train_x, test_x = rk.standardise(train_x, test_x)
    sources = {CODES_HASH: (train.codes, train.labels, test.codes, test.labels),
               INPUTS_HASH: (train_x, train_y, test_x, test_y)}
    rows = []
    for b in bits:
        for method, (database, database_labels, query, query_labels) in sources.items():
            if b > min(database.shape):  # more bits than principal directions
                continue
            database_bits, query_bits = rk.sign_hash(database, query, b, context.seed)
            rows.append({"method": method, "bits": b, **hash_retrieval(
                query_bits, query_labels, database_bits, database_labels, ks, radius)})
    if _binary_latent(context):
        rows.append({"method": BINARY, "bits": context.encoder.latent_dim, **hash_retrieval(
            test.codes, test.labels, train.codes, train.labels, ks, radius)})
    return rows


def _plot(path, rows: list[dict], radius: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mmae.artifacts.atomic import write_atomic

    figure = Figure(figsize=(5.5, 4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for method in dict.fromkeys(row["method"] for row in rows):
        points = sorted((row["bits"], row["precision"]) for row in rows if row["method"] == method)
        axes.plot(*zip(*points, strict=True), marker="o", label=method)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted({row["bits"] for row in rows}), labels=[str(b) for b in sorted(
        {row["bits"] for row in rows})])
    axes.set_ylim(0, 1)
    axes.set_xlabel("bits")
    axes.set_ylabel(f"precision within Hamming radius {radius}")
    axes.set_title("semantic hashing (test queries, training database)")
    axes.legend(fontsize="small")
    FigureCanvasAgg(figure)
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"))


def _fmt(value: float | None, width: int = 8) -> str:
    return f"{'-' if value is None or value != value else f'{value:.3f}':>{width}}"


def format_retrieval(results: dict) -> str:
    ks = results["k"]
    head = "".join(f"{f'mAP@{k}':>8}" for k in ks) + "".join(f"{f'R@{k}':>8}" for k in ks)
    lines = ["label retrieval (test queries, training database, cosine)", f"  {'':<34}{head}"]
    within = list(results["within"].values())
    cross = [row["label"] for row in results["cross_modal"].values()]
    names = list(results["within"]) + [f"{name} (label)" for name in results["cross_modal"]]
    columns = [f"{m}@{k}" for m in ("mAP", "R") for k in ks]
    for block in (within, cross):
        for row in block:
            lines.append(f"  {names.pop(0):<34}" + "".join(_fmt(row[c]) for c in columns))
        if block:
            lines.append(f"  {'  chance (random ranking)':<34}" + "".join(
                _fmt(float(np.mean([row[f"chance {c}"] for row in block]))) for c in columns))
    lines.append("same-sample retrieval across modalities (test)")
    lines.append(f"  {'':<34}" + "".join(f"{f'R@{k}':>8}" for k in ks) + f"{'rank':>8}{'of':>6}")
    for name, row in results["cross_modal"].items():
        same = row["same_sample"]
        lines.append(f"  {name:<34}" + "".join(_fmt(same[f"R@{k}"]) for k in ks)
                     + f"{same['mean_rank']:>8.1f}{same['candidates']:>6}")
    lines.append(f"semantic hashing (Hamming radius {results['radius']}; empty balls count as 0)")
    lines.append(f"  {'':<26}{'bits':>6}{'prec':>8}{'empty':>8}" + "".join(f"{f'mAP@{k}':>8}" for k in ks))
    for row in results["hashing"]:
        lines.append(f"  {row['method']:<26}{row['bits']:>6}{_fmt(row['precision'])}{_fmt(row['empty'])}"
                     + "".join(_fmt(row[f"mAP@{k}"]) for k in ks))
    return "\n".join(lines)


@EVALUATIONS.register("retrieval")
class Retrieval(Evaluation):
    """Label and same-sample retrieval from the codes, and semantic hashing (module docstring)."""

    order = 6
    needs_labels: ClassVar[bool] = True
    options: ClassVar[dict[str, type]] = {"k": list[int], "bits": list[int], "radius": int, "backend": str}

    def run(self, context: EvalContext) -> TaskResult:
        ks = _positive_ints(context.options, "k", [1, 10, 100])
        bits = _positive_ints(context.options, "bits", [8, 16, 32, 64])
        radius = context.options.get("radius", 2)
        if not isinstance(radius, int) or radius < 0:
            raise ConfigError(f"retrieval.radius must be a non-negative integer, got {radius!r}")
        backend = rk.resolve_backend(str(context.options.get("backend", "auto")),
                                     len(context.codes("train").codes))
        results = {"k": ks, "radius": radius, "backend": backend,
                   "within": _within(context, ks, backend), "cross_modal": _cross(context, ks, backend),
                   "hashing": _hashing(context, bits, ks, radius)}
        figures = []
        if (path := context.figure("retrieval_hashing.png")) is not None and results["hashing"]:
            _plot(path, results["hashing"], radius)
            figures.append(str(path))
        return TaskResult(results, format_retrieval(results), _summary(results, context), figures)


def _summary(results: dict, context: EvalContext) -> dict[str, float | None]:
    k = 10 if 10 in results["k"] else results["k"][0]
    d = context.encoder.latent_dim
    same = [row["same_sample"][f"R@{k}"] for row in results["cross_modal"].values()]
    summary = {f"label mAP@{k} (codes)": results["within"]["all modalities"][f"mAP@{k}"],
               f"label mAP@{k} (PCA-{d} inputs)": results["within"][f"PCA-{d} of the inputs"][f"mAP@{k}"],
               f"cross-modal same-sample R@{k}": float(np.mean(same)) if same else None}
    codes_hash = [row for row in results["hashing"] if row["method"] in (CODES_HASH, BINARY)]
    if codes_hash:
        row = codes_hash[-1]
        summary[f"hash precision r<={results['radius']} ({row['bits']} bits)"] = row["precision"]
    return summary
