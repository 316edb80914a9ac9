"""The model card of an export: `encoder/README.md`, in the Hugging Face Hub's format.

YAML metadata first (`library_name: mmae`, tags, and the license and datasets when given),
then what a reader needs before using the encoder: its modalities and their input settings,
the fusion, latent size and parameter count, the data it was trained on, the run's final
metrics, the tables of every `mmae-eval` task run on it, and how to load it.

Parts that change after export sit between HTML comments (`<!-- mmae:NAME -->` ...
`<!-- /mmae:NAME -->`) and are replaced in place: each evaluation's table when `mmae-eval`
runs again, the loading snippet when the encoder is pushed under a repo id. The card is not
part of what `load_encoder` checks: editing it changes no code.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mmae.artifacts.atomic import write_text_atomic

CARD = "README.md"
TAGS = ["mmae", "multimodal", "autoencoder", "representation-learning", "feature-extraction"]
#: Config entries too long or too internal to show as input settings.
HIDDEN_SETTINGS = ("mean", "std", "column", "tokenizer_files", "model_config", "processor", "extractor")


def _block(name: str, body: str) -> str:
    return f"<!-- mmae:{name} -->\n{body.strip()}\n<!-- /mmae:{name} -->"


def _block_pattern(name: str) -> re.Pattern:
    return re.compile(rf"<!-- mmae:{re.escape(name)} -->\n.*?\n<!-- /mmae:{re.escape(name)} -->", re.S)


def _replace_block(text: str, name: str, body: str) -> str:
    pattern = _block_pattern(name)
    if not pattern.search(text):
        return text.rstrip("\n") + "\n\n" + _block(name, body) + "\n"
    return pattern.sub(lambda _: _block(name, body), text, count=1)


def _split(text: str) -> tuple[dict, str]:
    """The card's YAML metadata and its text."""
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    if not match:
        return {}, text
    return yaml.safe_load(match[1]) or {}, text[match.end():]


def _join(metadata: Mapping, body: str) -> str:
    return f"---\n{yaml.safe_dump(dict(metadata), sort_keys=False).strip()}\n---\n{body.lstrip()}"


# --- the facts --------------------------------------------------------------------------------

def _settings(config: Mapping) -> str:
    shown = []
    for key, value in config.items():
        if key in HIDDEN_SETTINGS or value is None or value is False:
            continue
        shown.append(f"{key}={json.dumps(value)}")
    return ", ".join(shown) or "defaults"


def _parameter_count(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118


def _data_source(run_config: Mapping) -> str:
    data = run_config.get("data") or {}
    target = str(data.get("_target_", ""))
    if data.get("path"):
        return f"`{Path(str(data['path'])).name}` ({target.rsplit('.', 1)[-1]})"
    return "built-in synthetic data (`data=synthetic`)"


def _labels(config: Mapping) -> str | None:
    labels = config.get("labels") or {}
    values = labels.get("values")
    if not values:
        return None
    shown = ", ".join(map(str, values[:20])) + (f", ... ({len(values)} in all)" if len(values) > 20 else "")
    return f"{len(values)} classes: {shown}"


def _metrics_table(report: Mapping) -> str:
    rows = ["| modality | error from all inputs | from the others | training-mean baseline |",
            "| --- | --- | --- | --- |"]
    for name, row in (report.get("imputation") or {}).items():
        cells = [row.get(k) for k in ("from_all", "from_others", "baseline_mean")]
        rows.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.4g}" for v in cells) + " |")
    loss = (report.get("metrics") or {}).get("val/loss")
    epochs = report.get("epochs", "?")
    head = f"Validation loss {loss:.4g} after {epochs} epochs.\n\n" if loss is not None else ""
    return head + "\n".join(rows)


def _load_snippet(repo_id: str | None) -> str:
    where = f'"{repo_id}"' if repo_id else '"path/to/encoder"'
    pushed = "" if repo_id else '  # or "ORG/NAME" once pushed to the Hub'
    return ("```python\nimport mmae\n\n"
            f"encoder = mmae.load_encoder({where}){pushed}\n"
            "codes = encoder({name: batch})  # [batch, latent_dim], from any subset of the modalities\n"
            "```\n\n"
            "Frozen features of a whole dataset: `mmae-features encoder="
            f"{repo_id or 'DIR'} output=features.npz`.")


def _evaluation_body(evaluations: Mapping[str, Mapping]) -> str:
    if not evaluations:
        return "Not evaluated yet: `mmae-eval run=DIR task=all` adds its tables here."
    parts = []
    for name, entry in evaluations.items():
        summary = entry.get("summary") or {}
        table = ["| measure | value |", "| --- | --- |"] + [
            f"| {key} | {'-' if value is None else f'{value:.4g}'} |" for key, value in summary.items()]
        parts.append(f"### {name}\n\n" + ("\n".join(table) + "\n\n" if summary else "")
                     + f"```text\n{entry.get('text', '').strip()}\n```")
    return "\n\n".join(parts)


def _evaluations_record(evaluations: Mapping) -> str:
    """The evaluations as JSON in a comment, read back by `_evaluations_of` (a `-->` inside a
    string is escaped so that it cannot end the comment)."""
    escaped = json.dumps(evaluations).replace("-->", "--\\u003e")
    return f"<!-- mmae-evaluations {escaped} -->"


def _evaluations_of(text: str) -> dict[str, dict]:
    """The evaluations a card already holds (`_evaluations_record`)."""
    match = re.search(r"<!-- mmae-evaluations (.*?) -->", text, re.S)
    return json.loads(match[1]) if match else {}


def render_card(folder: Path, run_dir: Path | None = None, evaluations: Mapping | None = None,
                license: str | None = None, datasets: Iterable[str] = (), repo_id: str | None = None) -> str:
    """The card of the export in `folder`; `run_dir`: the mmae-train output it came from (its
    config.yaml and metrics.json give the training data and the final metrics)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    run_config = _yaml(run_dir / "config.yaml") if run_dir else {}
    report = _json(run_dir / "metrics.json") if run_dir else {}
    modalities = config.get("modalities", {})
    encoder = config.get("encoder", {})
    metadata: dict[str, Any] = {"library_name": "mmae", "tags": [*TAGS, *modalities]}
    if license:
        metadata["license"] = license
    if datasets:
        metadata["datasets"] = list(datasets)
    fusion = config.get("fusion", {}).get("class", "?")
    lines = [f"# mmae encoder: {', '.join(modalities)}", "",
             f"A multimodal encoder trained with mmae {config.get('mmae_version')}: "
             "each modality is encoded, the codes of those present are fused into one shared latent, "
             "and a missing modality is simply left out.", "",
             "| modality | class | input settings |", "| --- | --- | --- |"]
    lines += [f"| {name} | {entry.get('class')} | {_settings(entry.get('config', {}))} |"
              for name, entry in modalities.items()]
    referenced = config.get("referenced_weights")
    lines += ["", f"- fusion: `{fusion}`; latent size {encoder.get('latent_dim', '?')}"
              + (" (variational)" if encoder.get("variational") else ""),
              f"- parameters: {_parameter_count(folder):,} stored"
              + (f" (frozen backbones of {sorted(referenced)} load from their own models)"
                 if referenced else ""),
              ""]
    source = _data_source(run_config) if run_config else "unknown (exported without its run directory)"
    lines += ["## Training data", "", f"- source: {source}"]
    if report.get("rows"):
        lines.append("- rows: " + ", ".join(f"{split} {count:,}" for split, count in report["rows"].items()))
    if (labels := _labels(config)) is not None:
        lines.append(f"- labels: {labels}")
    lines += ["", "## Final metrics", ""]
    lines.append(_metrics_table(report) if report else "Not known: exported without its run directory.")
    evaluations = dict(evaluations or {})
    lines += ["", "## Evaluations", "", _block("evaluations", _evaluation_body(evaluations)),
              _evaluations_record(evaluations),
              "", "## How to load", "", _block("load", _load_snippet(repo_id)), ""]
    return _join(metadata, "\n".join(lines))


def write_card(folder: Path, run_dir: Path | None = None, license: str | None = None,
               datasets: Iterable[str] = (), evaluations: Mapping | None = None) -> Path:
    """Write `folder/README.md` from the export and its run. What a card already there holds
    beyond that is kept unless given anew: its evaluations, license and datasets."""
    path = Path(folder) / CARD
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    metadata = _split(old)[0]
    if evaluations is None:
        evaluations = _evaluations_of(old)
    card = render_card(Path(folder), run_dir, evaluations, license or metadata.get("license"),
                       list(datasets) or metadata.get("datasets") or ())
    write_text_atomic(path, card)
    return path


def record_evaluation(folder: Path, name: str, text: str, summary: Mapping[str, float | None]) -> bool:
    """Put an `mmae-eval` task's table into the card, replacing that task's earlier one; False
    when `folder` has no card."""
    path = Path(folder) / CARD
    if not path.is_file():
        return False
    card = path.read_text(encoding="utf-8")
    evaluations = _evaluations_of(card)
    evaluations[name] = {"text": text, "summary": dict(summary)}
    card = _replace_block(card, "evaluations", _evaluation_body(evaluations))
    card = re.sub(r"<!-- mmae-evaluations .*? -->", lambda _: _evaluations_record(evaluations), card,
                  count=1, flags=re.S)
    write_text_atomic(path, card)
    return True


def card_for_hub(text: str, repo_id: str, license: str | None = None, datasets: Iterable[str] = ()) -> str:
    """The card as pushed: loading by `repo_id`, and the license and datasets when given."""
    metadata, body = _split(text)
    if license:
        metadata["license"] = license
    if datasets:
        metadata["datasets"] = list(datasets)
    return _join(metadata, _replace_block(body, "load", _load_snippet(repo_id)))


def _yaml(path: Path) -> dict:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
