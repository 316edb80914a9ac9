"""Bad inputs and mistakes a new user makes, through the public commands: each ends in the
right result or in one line naming the file, row and column or the key. (Interruptions:
tests/integration/test_kill_resume.py; edited exports: tests/artifacts/test_export_integrity.py; image modes:
tests/modalities/test_image_modes.py; non-ASCII text: tests/modalities/test_text_tokenizer.py.)"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmae.cli.evaluate import main as eval_main
from mmae.cli.features import main as features_main
from mmae.cli.train import main as train_main
from mmae.data.labels import LabelMap

FAST = ["logger=none", "progress_bar=none", "trainer.max_epochs=1", "model.latent_dim=4",
        "model.embed_dim=16", "model.decoder_hidden=16", "data.num_workers=0", "data.batch_size=8"]


def _table_manifest(folder: Path, labels: dict[str, list]) -> Path:
    """A tabular manifest: 24 training rows, then the given rows per split, labelled as given."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rows.csv"
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "label", "split"])
        for split, values in labels.items():
            for value in values:
                writer.writerow([f"{rng.normal():.3f}", f"{rng.normal():.3f}", value, split])
    return path


def _table_overrides(path: Path, run: Path) -> list[str]:
    return ["data=manifest", f"data.path={path}", "modality=[tabular]", "modality.tabular.numeric=[a,b]",
            f"paths.output_dir={run}", *FAST]


def _mmae(main, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run a console entry point in-process; its exit code and what it printed."""
    monkeypatch.setattr(sys, "argv", [main.__module__, *argv])
    code = 0
    try:
        main() if main is train_main else main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# -- labels round-trip ----------------------------------------------------------------------------
@pytest.mark.slow
def test_features_keep_integer_labels_and_their_values(tmp_path, monkeypatch, capsys):
    test_labels = [3, 10, 2, 1, 0, -1]  # the user's labels: not 0..K-1, one negative
    path = _table_manifest(tmp_path, {"train": [0, 1, 2, 3, 10, -1] * 4, "test": test_labels})
    run = tmp_path / "run"
    code, output = _mmae(train_main, _table_overrides(path, run), monkeypatch, capsys)
    assert code == 0, output
    stored = {"kind": "integer", "values": [-1, 0, 1, 2, 3, 10]}
    assert json.loads((run / "metrics.json").read_text())["labels"] == stored
    assert json.loads((run / "encoder" / "config.json").read_text())["labels"] == stored

    data = [f"data.path={path}", "data.num_workers=0", "data=manifest"]
    for suffix in (".npz", ".parquet"):
        out = tmp_path / f"features{suffix}"
        code, output = _mmae(features_main, [f"encoder={run / 'encoder'}", f"output={out}", *data],
                             monkeypatch, capsys)
        assert code == 0, output
        if suffix == ".npz":
            saved = np.load(out)
            assert saved["labels"].tolist() == test_labels and saved["labels"].dtype == np.int64
            assert saved["labelled"].all() and "label_names" not in saved
        else:
            assert pq.read_table(out).column("label").to_pylist() == test_labels


@pytest.mark.slow
def test_features_keep_string_labels_as_strings(tmp_path, monkeypatch, capsys):
    path = _table_manifest(tmp_path, {"train": ["cat", "dog", "émeu", ""] * 6, "test": ["dog", "", "émeu"]})
    run = tmp_path / "run"
    assert _mmae(train_main, _table_overrides(path, run), monkeypatch, capsys)[0] == 0
    out = tmp_path / "features.npz"
    data = [f"data.path={path}", "data.num_workers=0", "data=manifest"]
    assert _mmae(features_main, [f"encoder={run / 'encoder'}", f"output={out}", *data],
                 monkeypatch, capsys)[0] == 0
    saved = np.load(out)  # no pickle needed: the names are a unicode array
    assert saved["label_names"].tolist() == ["cat", "dog", "émeu"]
    assert saved["labels"].tolist() == [1, -1, 2] and saved["labelled"].tolist() == [True, False, True]
    assert saved["label_names"][saved["labels"][[0, 2]]].tolist() == ["dog", "émeu"]
    out = tmp_path / "features.parquet"
    assert _mmae(features_main, [f"encoder={run / 'encoder'}", f"output={out}", *data],
                 monkeypatch, capsys)[0] == 0
    assert pq.read_table(out).column("label").to_pylist() == ["dog", None, "émeu"]


def test_label_map_orders_integers_by_value_and_reads_any_spelling():
    labels = LabelMap.from_cells(["3", 10, "2.0", 1, " 0 ", -1])
    assert labels.kind == "integer" and labels.values == (-1, 0, 1, 2, 3, 10)
    assert [labels.index(c) for c in ("10", -1, 3.0)] == [5, 0, 4]
    assert labels.labels_of([5, -1, 0]).tolist() == [10, -1, -1]
    assert LabelMap.from_cells(["b", "a", 2]).values == ("2", "a", "b")
    assert LabelMap.from_cells([1.5, 2]).kind == "string"  # 1.5 is not a class index
    assert LabelMap.from_json(labels.to_json()) == labels


def test_label_map_reads_the_form_older_shards_stored():
    identity = LabelMap.from_json({"0": 0, "1": 1, "5": 5})  # integers were their own index
    assert identity.index("5") == 5 and identity.labels_of([5]).tolist() == [5]
    by_text = LabelMap.from_json({"-1": 0, "0": 1, "10": 2, "2": 3})  # sorted as text
    assert [by_text.index(c) for c in ("-1", "0", "10", "2")] == [0, 1, 2, 3]
    assert by_text.labels_of([2]).tolist() == [10]


# -- a run directory holds one run ----------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_into_the_same_directory_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    first = ["experiment=tiny", f"paths.output_dir={run}", *FAST[:3]]
    assert _mmae(train_main, first, monkeypatch, capsys)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    code, output = _mmae(train_main, [*first, "seed=7"], monkeypatch, capsys)
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        f"mmae-train: paths.output_dir={run} already holds a run (config.yaml, checkpoints, encoder, "
        "metrics.json); continue it with ckpt_path=last, or give a fresh paths.output_dir")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before  # untouched
    code, output = _mmae(train_main, [*first, "ckpt_path=last"], monkeypatch, capsys)  # resuming is fine
    assert code == 0, output


# -- settings refused up front, in one line -------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("trainer.max_epochs=-1",
     "mmae-train: trainer.max_epochs=-1 with no trainer.max_steps or trainer.max_time would train forever"),
    ("trainer.max_epochs=0", "mmae-train: trainer.max_epochs=0 with no trainer.max_steps"),
    ("optimizer.lr=-1", "mmae-train: optimizer (torch.optim.AdamW): Invalid learning rate: -1"),
    ("optimizer.betas=[1.5,0.9]",
     "mmae-train: optimizer (torch.optim.AdamW): Invalid beta parameter at index 0"),
    ("optimizer._target_=torch.optim.RMSprop",  # the default's fused kernel, which RMSprop lacks
     "mmae-train: unknown key 'optimizer.fused'; the valid keys of torch.optim.RMSprop: lr, alpha, eps, "
     "weight_decay, momentum, centered, capturable, foreach, maximize, differentiable; "
     "drop it with ~optimizer.fused"),
])
def test_unbounded_or_invalid_settings_are_one_line(tmp_path, monkeypatch, capsys, override, message):
    run = tmp_path / "run"
    code, output = _mmae(train_main, ["experiment=tiny", f"paths.output_dir={run}", override],
                         monkeypatch, capsys)
    assert code == 1 and output.strip().splitlines()[-1].startswith(message), output
    assert len(output.strip().splitlines()) == 1 and not run.exists()  # nothing written


def test_bounded_by_steps_instead_of_epochs_is_accepted(compose_cfg):
    from mmae.config.schema import validate_config

    validate_config(compose_cfg("trainer.max_epochs=-1", "+trainer.max_steps=10"))


def test_a_key_of_another_command_is_one_line(tmp_path, monkeypatch, capsys):
    code, output = _mmae(eval_main, [f"run={tmp_path}", "progress_bar=none"], monkeypatch, capsys)
    assert code == 1
    assert output.strip() == (
        "mmae-eval: 'progress_bar' is not a setting of evaluate.yaml (it is a config group of another "
        "command); its settings are: checkpoint, cleaned, cluster, coherence, compress, data, encoder, "
        "noise_std, output, projection, retrieval, robustness, run, seed, task, trust_code")


# -- files -----------------------------------------------------------------------------------------
def _image_manifest(folder: Path, cells: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(folder / "good.png")
    path = folder / "images.csv"
    path.write_text("image,split,row\n" + "".join(f"{c},train,{i}\n" for i, c in enumerate(cells)))
    return path


@pytest.mark.parametrize(("make", "reason"), [
    (lambda d: (d / "loop").symlink_to("loop"), "loop: symbolic link loop"),
    (lambda d: (d / "loop").symlink_to("nowhere.png"), "loop: broken symbolic link (to nowhere.png"),
    (lambda d: (d / "loop").mkdir(), "loop is a directory, not a file"),
])
def test_a_link_loop_or_a_directory_is_named_as_such(tmp_path, make, reason):
    from mmae.core.errors import DataError
    from mmae.data.manifest import ManifestDataset
    from mmae.modalities import ImageModality

    path = _image_manifest(tmp_path, ["good.png", "loop"])
    make(tmp_path)
    with pytest.raises(DataError) as error:
        ManifestDataset(path, {"image": ImageModality(channels=1, size=8)}, cache=False)
    assert str(error.value).startswith("images.csv, row 2, column 'image': ")
    assert str(error.value).endswith(reason) or reason in str(error.value)


def test_a_file_that_fails_to_decode_is_counted_and_named_with_on_error_skip(tmp_path):
    from mmae.modalities import ImageModality
    from mmae.training.datamodule import ManifestDataModule

    path = _image_manifest(tmp_path, ["good.png"] * 6 + ["broken.png"] + ["good.png"] * 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.warns(UserWarning, match=r"images.csv \(train\): skipped 1 row\(s\) whose files failed to "
                                         r"decode .*row 7, column 'image': cannot decode image .*broken.png"):
        data = ManifestDataModule(str(path), {"image": ImageModality(channels=1, size=8)}, num_workers=0,
                                  on_error="skip", val_fraction=0.0)
    train = data.dataset("train")
    assert len(train.skipped) == 1 and "broken.png" in train.skipped[0]


@pytest.mark.slow
def test_eval_on_a_run_whose_manifest_has_no_test_rows_names_the_empty_split(tmp_path, monkeypatch, capsys):
    path = _table_manifest(tmp_path, {"train": [0, 1] * 12})
    run = tmp_path / "run"
    assert _mmae(train_main, _table_overrides(path, run), monkeypatch, capsys)[0] == 0
    code, output = _mmae(eval_main, [f"run={run}", "data=manifest", f"data.path={path}",
                                     "data.num_workers=0"], monkeypatch, capsys)
    assert code == 1
    last = output.strip().splitlines()[-1]
    assert "rows.csv (test): the test split is empty, and mmae-eval needs it" in last


# -- a quiet log -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_default_log_has_no_lightning_tip_no_leafspec_warning_and_no_flops_row(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run([sys.executable, "-m", "mmae.train", "experiment=tiny", "trainer.max_epochs=1",
                             "progress_bar=none", f"paths.output_dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    for noise in ("litlogger", "LeafSpec", "FLOPs", "Traceback"):
        assert noise not in log, noise
    assert "trainable 279,857 of 279,857" in log  # mmae's own parameter table instead


def test_ctrl_c_outside_training_is_one_line_and_exit_130(capsys):
    from mmae.cli.runner import run_command

    def decoding():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        run_command("mmae-features", decoding)
    assert exit_.value.code == 130
    assert capsys.readouterr().err.strip() == "mmae-features: interrupted (Ctrl+C)"
