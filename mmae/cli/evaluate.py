"""`mmae-eval run=DIR [task=...]`: every evaluation of a trained run (`mmae.evaluation.catalog`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mmae.artifacts.atomic import write_text_atomic
from mmae.artifacts.model_card import CARD, record_evaluation
from mmae.cli.runner import run_command
from mmae.config.assembly import build_eval_context, evaluation_config
from mmae.config.schema import entry_schema, validate_config
from mmae.core.errors import ConfigError
from mmae.core.registry import EVALUATIONS
from mmae.evaluation.base import Evaluation, TaskResult
from mmae.evaluation.catalog import ALL, tasks


def main(argv: list[str] | None = None) -> None:
    """`mmae-eval run=DIR [task=NAME|all] [data=... data.path=...] [output=FILE]`.

    task=probe (default): linear probes and imputation; anomaly: anomaly scores from
    reconstruction errors, AUROC / AP where the data marks anomalies; denoise: error to the
    clean test inputs before and after denoising (noise_std); coherence: imputed modalities
    classified by classifiers of real data; robustness: probes and reconstructions by modality
    subset and input noise; cluster: k-means on the codes; retrieval: nearest neighbours and
    semantic hashing; compress: rate against distortion of the quantised latent; all: every
    task that applies, then one summary (docs/evaluation.md). A task of your own runs by its
    import path, `task=my_pkg.MyTask trust_code=true`, its settings in `+my_task.key=value`
    (docs/extending.md).

    `run=DIR` is an mmae-train output directory: its encoder/, checkpoints/best.ckpt and, unless
    data is overridden, the data of its config.yaml; results go to DIR/<task>.json (probe:
    DIR/eval.json) and its figures beside them. Or give `encoder=DIR` (the tasks without a
    decoder) and optionally `checkpoint=FILE`.
    """
    overrides = sys.argv[1:] if argv is None else argv
    run_command("mmae-eval", lambda: _evaluate(overrides))


def _evaluate(overrides: list[str]) -> None:
    cfg = evaluation_config(overrides)  # validated below, once a task of the user's own is known
    run = Path(cfg.run) if cfg.run else None
    own_task = user_task(cfg.task, cfg.trust_code)
    validate_config(cfg, "evaluate", {"task": str, own_task.section: own_task.options} if own_task else None)
    figures = _output_path(cfg, run, "eval.json", single=True)
    context = build_eval_context(cfg, run, figures=figures.parent if figures else None)
    classes = ({own_task.section: own_task} if own_task else
               {name: EVALUATIONS[name] for name in (tasks() if cfg.task == ALL else [cfg.task])})
    outcomes, skipped = {}, {}
    # The card of a local export (one read by Hub repo id lives in the Hub's cache: left alone).
    card_folder = Path(cfg.encoder) if cfg.encoder else (run / "encoder" if run else None)
    card_folder = card_folder if card_folder is not None and card_folder.is_dir() else None
    for name, task_class in classes.items():
        task = task_class()
        reason = task.applies(context)
        if reason is not None:
            if cfg.task != ALL:
                raise ConfigError(f"task={name} {reason}")
            skipped[name] = reason
            continue
        own = OmegaConf.to_container(cfg[name]) if cfg.get(name) is not None else {}
        context.options = {**{key: cfg[key] for key in SHARED_OPTIONS}, **own}
        outcome = task.run(context)
        outcomes[name] = outcome
        print(f"\n== {name} ==\n{outcome.text}" if cfg.task == ALL else outcome.text)
        output = _output_path(cfg, run, RESULT_FILES.get(name, f"{name}.json"), single=cfg.task != ALL)
        if output is not None:
            write_text_atomic(output, json.dumps(outcome.results, indent=2))
            print(f"mmae-eval: {name} results in {output}")
        if card_folder is not None and record_evaluation(card_folder, name, outcome.text, outcome.summary):
            print(f"mmae-eval: {name} table in the model card {card_folder / CARD}")
    if cfg.task == ALL:
        print("\n" + format_summary(outcomes, skipped))
        output = _output_path(cfg, run, "eval_all.json", single=True)
        if output is not None:
            summary = {"summary": {n: o.summary for n, o in outcomes.items()}, "skipped": skipped}
            write_text_atomic(output, json.dumps(summary, indent=2))
            print(f"mmae-eval: summary in {output}")


def user_task(reference: str, trust_code: bool) -> type[Evaluation] | None:
    """The class of a task of the user's own, named by its import path (`my_pkg.MyTask` or
    `my_pkg:MyTask`), or None for one of mmae's tasks. Importing it runs its module's code, so
    it needs `trust_code=true`."""
    if "." not in reference and ":" not in reference:
        return None
    task = EVALUATIONS.resolve(reference, Evaluation, trust_code, where=f"task={reference}")
    own = task.section in EVALUATIONS.names() and EVALUATIONS[task.section] is task  # one of mmae's
    if task.section in entry_schema("evaluate") and not own:
        raise ConfigError(f"task={reference}: its settings' section '{task.section}' is already a key of "
                          f"mmae-eval's config; give the class another name, or `section = \"...\"`")
    return task


#: Settings at the top of conf/evaluate.yaml that tasks read beside their own section.
SHARED_OPTIONS = ("projection", "noise_std", "cleaned")
#: Result files whose names predate task=all (the others are `<task>.json`).
RESULT_FILES = {"probe": "eval.json"}


def _output_path(cfg, run: Path | None, default_name: str, single: bool) -> Path | None:
    """Where a result goes: `output=FILE` for one task (task=all: its summary, with the tasks'
    files beside it), else the run directory."""
    if cfg.output:
        output = Path(cfg.output)
        return output if single else output.with_name(default_name)
    return run / default_name if run else None


def format_summary(outcomes: dict[str, TaskResult], skipped: dict[str, str]) -> str:
    """task=all's one table: each task's headline numbers, then the tasks skipped and why."""
    lines = ["summary", f"  {'task':<12}{'measure':<44}{'value':>10}"]
    for name, outcome in outcomes.items():
        for i, (measure, value) in enumerate(outcome.summary.items()):
            shown = "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
            lines.append(f"  {name if i == 0 else '':<12}{measure:<44}{shown:>10}")
    lines += [f"  skipped {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
