"""Every export carries a model card (README.md in the Hub's format) that says what the encoder
is, what it was trained on and how good it is; mmae-eval puts its tables into it in place."""

import json
import re
import shutil

import pytest
import yaml
from safetensors import safe_open

from mmae.artifacts.model_card import card_for_hub, record_evaluation
from mmae.cli.evaluate import main as evaluate_main
from mmae.cli.export import main as export_main


def _card(folder):
    text = (folder / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "the card starts with YAML metadata"
    return yaml.safe_load(match[1]), text[match.end() :]


@pytest.fixture
def run(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run")


def test_a_trained_run_s_export_has_a_card_with_its_facts(tiny_run):
    metadata, body = _card(tiny_run / "encoder")
    assert metadata["library_name"] == "mmae" and {"image", "vector", "mmae"} <= set(metadata["tags"])
    assert "license" not in metadata and "datasets" not in metadata  # none given
    config = json.loads((tiny_run / "encoder" / "config.json").read_text())
    assert "| image | image | channels=1, size=[28, 28]" in body and "| vector | vector | dim=" in body
    assert f"- fusion: `mean`; latent size {config['encoder']['latent_dim']}" in body
    with safe_open(tiny_run / "encoder" / "model.safetensors", "pt") as weights:
        stored = sum(weights.get_tensor(k).numel() for k in weights.keys())  # noqa: SIM118
    assert f"- parameters: {stored:,} stored" in body
    report = json.loads((tiny_run / "metrics.json").read_text())
    assert report["rows"] == {"train": 256, "val": 32}  # the synthetic 320: 256, 32 and 32 for test
    assert "- rows: train 256, val 32" in body and "built-in synthetic data (`data=synthetic`)" in body
    assert "- labels: 10 classes: 0, 1, 2" in body
    assert f"Validation loss {report['metrics']['val/loss']:.4g} after 1 epochs." in body
    image = report["imputation"]["image"]
    assert (
        f"| image | {image['from_all']:.4g} | {image['from_others']:.4g} | {image['baseline_mean']:.4g} |"
        in body
    )
    assert "Not evaluated yet" in body and 'mmae.load_encoder("path/to/encoder")' in body
    snippet = re.search(r"```python\n(.*?)```", body, re.S)[1]
    compile(snippet, "card", "exec")  # the loading snippet is valid Python


def test_mmae_eval_puts_its_table_into_the_card_and_replaces_it_when_run_again(run, capsys):
    evaluate_main([f"run={run}", "task=probe"])
    assert f"probe table in the model card {run / 'encoder' / 'README.md'}" in capsys.readouterr().out
    summary = json.loads((run / "eval.json").read_text())
    _, body = _card(run / "encoder")
    assert "Not evaluated yet" not in body and body.count("### probe") == 1
    assert "| measure | value |" in body and "probe all" in body
    record_evaluation(run / "encoder", "probe", "second table", {"probe all": 0.5})
    _, body = _card(run / "encoder")
    assert body.count("### probe") == 1 and "second table" in body and "| probe all | 0.5 |" in body
    assert summary  # (the task's own results file is written as before)


def test_a_re_export_keeps_the_evaluations_and_takes_a_license_and_datasets(run):
    record_evaluation(run / "encoder", "cluster", "k-means table", {"nmi": 0.25})
    export_main([str(run), "--license", "apache-2.0", "--dataset", "org/spoken-digits"])
    metadata, body = _card(run / "encoder")
    assert metadata["license"] == "apache-2.0" and metadata["datasets"] == ["org/spoken-digits"]
    assert "### cluster" in body and "k-means table" in body and "| nmi | 0.25 |" in body
    export_main([str(run)])  # again, without them: what the card said is kept
    assert _card(run / "encoder")[0]["license"] == "apache-2.0" and "### cluster" in _card(run / "encoder")[1]


def test_a_table_that_holds_an_html_comment_end_does_not_break_the_card(run):
    record_evaluation(run / "encoder", "odd", "a --> b", {})
    record_evaluation(run / "encoder", "probe", "fine", {})
    _, body = _card(run / "encoder")
    assert "a --> b" in body and "### odd" in body and "### probe" in body


def test_the_pushed_card_loads_by_repo_id_and_keeps_the_rest(tiny_run):
    text = (tiny_run / "encoder" / "README.md").read_text()
    pushed = card_for_hub(text, "org/digits", license="mit")
    assert 'mmae.load_encoder("org/digits")' in pushed and "encoder=org/digits" in pushed
    assert "path/to/encoder" not in pushed and "license: mit" in pushed
    assert (
        pushed.split("## How to load")[0].split("---\n", 2)[2]
        == text.split("## How to load")[0].split("---\n", 2)[2]
    )


def test_exporting_a_run_directory_or_a_checkpoint_writes_the_card(run, tmp_path):
    export_main([str(run / "checkpoints" / "best.ckpt"), "--output", str(tmp_path / "again")])
    _, body = _card(tmp_path / "again")
    assert "- rows: train 256, val 32" in body  # the checkpoint's run directory was found
    with pytest.raises(SystemExit, match=r"is not an mmae-train run: no checkpoints/best\.ckpt"):
        export_main([str(tmp_path)])
