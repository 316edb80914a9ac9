"""After a Hydra multirun: one table of every run's overrides and final metrics.

Registered in `conf/train.yaml` under `hydra.callbacks`; writes `<sweep dir>/summary.md` and
`summary.json` and prints the table, so a sweep ends with its answer on screen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mmae.artifacts.atomic import write_text_atomic


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        return list(OmegaConf.load(path)) if path.is_file() else []
    except yaml.YAMLError:  # Hydra writes it in place: a killed job can leave a part
        return []


def _run_row(run_dir: Path, shared: set[str]) -> dict[str, Any]:
    swept = [o for o in _overrides(run_dir) if o not in shared]
    row: dict[str, Any] = {"run": run_dir.name, "overrides": " ".join(swept) or "-"}
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        row["status"] = "failed or unfinished (no metrics.json)"
        return row
    try:
        report = json.loads(metrics_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):  # not written by mmae (it writes atomically)
        row["status"] = "metrics.json is truncated or corrupt"
        return row
    row["status"] = "ok"
    row["val/loss"] = report["metrics"].get("val/loss")
    for name, imputation in report.get("imputation", {}).items():
        row[f"{name} from others"] = imputation.get("from_others")
        row[f"{name} gain"] = imputation.get("gain_over_baseline")
    return row


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per run directory (numbered subdirs holding `.hydra/`), in run order; the
    overrides column keeps what differs between runs (the swept values)."""
    runs = [d for d in sweep_dir.iterdir() if d.is_dir() and (d / ".hydra").is_dir()]
    runs.sort(key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    override_sets = [set(_overrides(d)) for d in runs]
    shared = set.intersection(*override_sets) if len(runs) > 1 else set()
    return [_run_row(d, shared) for d in runs]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a Markdown table; columns in first-seen order, blanks as '-'."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback: rewrite the summary after every job, print it when the sweep ends.

    Writing after each job keeps a summary even when a failing job stops the sweep (Hydra's
    basic sweeper re-raises the failure before `on_multirun_end`)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = write_summary(sweep_dir)
        if table:
            print(f"mmae-train: sweep of {table.count(chr(10)) - 1} runs in {sweep_dir}\n{table}")


def write_summary(sweep_dir: Path) -> str | None:
    """Write `summary.md` and `summary.json` for the runs under `sweep_dir`; return the table."""
    rows = sweep_rows(sweep_dir) if sweep_dir.is_dir() else []
    if not rows:
        return None
    table = markdown_table(rows)
    write_text_atomic(sweep_dir / "summary.md", table + "\n")
    write_text_atomic(sweep_dir / "summary.json", json.dumps(rows, indent=2))
    return table
