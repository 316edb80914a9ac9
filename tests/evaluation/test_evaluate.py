"""mmae-eval and mmae-features on a trained run."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mmae import load_encoder
from mmae.cli.evaluate import main as eval_main
from mmae.cli.features import main as features_main
from mmae.cli.train import train
from mmae.evaluation.base import Evaluation
from mmae.evaluation.codes import encode_batches
from mmae.evaluation.probes import format_results, linear_probe, pca

TINY = ["experiment=tiny", "logger=none", "progress_bar=none"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from hydra import compose, initialize_config_dir

    from mmae.config import CONFIG_DIR

    folder = tmp_path_factory.mktemp("run")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.output_dir={folder}"])
    _, objects = train(cfg)
    return folder, objects


def test_linear_probe_separates_separable_classes_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (300,), generator=g)
    informative = torch.nn.functional.one_hot(labels, 3).float() * 3 + torch.randn(300, 3, generator=g)
    assert linear_probe(informative[:200], labels[:200], informative[200:], labels[200:]) > 0.9
    noise = torch.randn(300, 3, generator=g)
    assert linear_probe(noise[:200], labels[:200], noise[200:], labels[200:]) < 0.6


def test_pca_keeps_the_directions_of_largest_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 5, generator=g) * torch.tensor([10.0, 0.1, 0.1, 0.1, 0.1])
    _, test_pca = pca(x[:400], x[400:], 1)
    assert torch.corrcoef(torch.stack([test_pca[:, 0], x[400:, 0]]))[0, 1].abs() > 0.99


@pytest.mark.slow
def test_eval_cli_reports_probes_per_modality_and_imputation(run, capsys):
    folder, _ = run
    eval_main([f"run={folder}"])
    results = json.loads((folder / "eval.json").read_text())
    probes = results["linear_probe_accuracy"]
    assert set(probes) == {"all modalities", "image only", "vector only", "PCA-8 of the inputs"}
    assert all(0.0 <= v <= 1.0 for v in probes.values())
    raw = results["raw_input_probe_accuracy"]  # the bar the codes must clear, measured alike
    assert set(raw) == {"all modalities", "image only", "vector only"}
    assert all(0.0 <= v <= 1.0 for v in raw.values())
    assert set(results["imputation"]["image"]) == {"from_all", "from_others", "baseline_mean",
                                                   "gain_over_baseline"}
    out = capsys.readouterr().out
    assert "linear probe (test accuracy)" in out and "raw inputs" in out
    losing = [name for name in raw if probes[name] < raw[name]]
    assert ("the codes lose to a probe on the raw inputs: " in out) == bool(losing)


def test_the_probe_table_says_plainly_where_the_codes_lose():
    text = format_results({"linear_probe_accuracy": {"all modalities": 0.488, "image only": 0.2,
                                                     "PCA-32 of the inputs": 0.166},
                           "raw_input_probe_accuracy": {"all modalities": 0.652, "image only": 0.1}})
    assert "  all modalities                       48.8%       65.2%" in text
    assert "PCA-32 of the inputs                 16.6%" in text
    assert text.splitlines()[-1] == ("the codes lose to a probe on the raw inputs: "
                                     "all modalities (-16.4 points)")


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".parquet"])
def test_features_cli_writes_codes_ids_and_labels(run, tmp_path, suffix):
    folder, objects = run
    output = tmp_path / f"features{suffix}"
    features_main([f"encoder={folder / 'encoder'}", f"output={output}", "split=val",
                   "data.dataset.num_samples=320", "modalities=[image]"])
    expected = encode_batches(load_encoder(folder / "encoder"), objects["datamodule"].val_dataloader(),
                              ["image"])
    if suffix == ".npz":
        saved = np.load(output)
        np.testing.assert_allclose(saved["features"], expected.codes.numpy(), atol=1e-6)
        np.testing.assert_array_equal(saved["ids"], expected.ids.numpy())
        np.testing.assert_array_equal(saved["labels"], expected.labels.numpy())
    elif suffix == ".npy":
        np.testing.assert_allclose(np.load(output), expected.codes.numpy(), atol=1e-6)
    else:
        table = pq.read_table(output).to_pydict()
        assert table["id"] == expected.ids.tolist() and len(table) == 2 + expected.codes.shape[1]


@pytest.mark.parametrize("args, message", [
    (["output=x.csv"], "output must end with one of"),
    (["modalities=[audio]"], r"modalities \['audio'\] are not in the encoder"),
    (["split=dev"], "split must be one of"),
])
def test_features_cli_rejects_bad_arguments(run, tmp_path, args, message):
    folder, _ = run
    defaults = [f"encoder={folder / 'encoder'}", f"output={tmp_path / 'f.npz'}"]
    with pytest.raises(SystemExit, match=message):
        features_main([*defaults, *args])


@pytest.mark.slow
def test_the_default_job_serves_every_application(compose_cfg, tmp_path):
    """One training of the default job, then what users do with it (one job keeps CI short)."""
    report, _ = train(compose_cfg("logger=none", "progress_bar=none"))
    # The shared latent carries cross-modal information: each modality from the other.
    for name, row in report["imputation"].items():
        assert row["gain_over_baseline"] >= 0.3, (name, row)
        assert row["from_all"] < row["from_others"]

    eval_main([f"run={tmp_path}", "projection=tsne"])
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["latent_map"] == str(tmp_path / "latent_map.png")
    assert (tmp_path / "latent_map.png").stat().st_size > 10_000
    probes = results["linear_probe_accuracy"]
    assert probes["all modalities"] > probes["PCA-32 of the inputs"] + 0.1, probes
    for name, row in results["imputation"].items():
        assert row["from_others"] < 0.7 * row["baseline_mean"], (name, row)

    # Anomalies injected into val/test (the training split is the run's own, clean).
    eval_main([f"run={tmp_path}", "task=anomaly", "data.dataset.anomaly_rate=0.2"])
    anomaly = json.loads((tmp_path / "anomaly.json").read_text())
    assert anomaly["samples"]["test_anomalies"] == 80
    assert anomaly["scores"]["combined"]["auroc"] > 0.95, anomaly["scores"]
    assert anomaly["detection"]["f1"] > 0.8

    # Gaussian noise on the test inputs: the reconstruction is closer to the clean signal.
    eval_main([f"run={tmp_path}", "task=denoise", "noise_std=0.2", f"cleaned={tmp_path / 'clean.npz'}"])
    denoising = json.loads((tmp_path / "denoise.json").read_text())
    assert denoising["image"]["denoised"] < 0.6 * denoising["image"]["noisy"], denoising
    assert denoising["vector"]["denoised"] < denoising["vector"]["noisy"], denoising
    with np.load(tmp_path / "clean.npz") as cleaned:  # the CLI's cleaned inputs
        assert cleaned["image"].shape == (400, 1, 28, 28) and cleaned["vector"].shape == (400, 32)
        assert cleaned["ids"].tolist() == list(range(3600, 4000))
        assert cleaned["present_image"].dtype == bool


def test_probe_needs_two_training_samples():
    from mmae.core.errors import DataError

    with pytest.raises(DataError, match="at least 2 labelled training samples"):
        linear_probe(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.zeros(3, 2),
                     torch.zeros(3, dtype=torch.long))


@pytest.mark.slow
def test_eval_overrides_apply_on_top_of_the_runs_data(run, tmp_path):
    folder, _ = run
    eval_main([f"run={folder}", "data.batch_size=7", f"output={tmp_path / 'e.json'}"])
    # The tiny run's 320 samples are kept (the default synthetic config has 4000).
    results = json.loads((tmp_path / "e.json").read_text())
    assert results["samples"] == {"train": 256, "test": 32}


QUICK_TASKS = ["compress.levels=[2,8]", "compress.jpeg_quality=[50]", "robustness.sigmas=[0.0,1.0]",
               "robustness.matched_probes=false", "retrieval.bits=[8]", "retrieval.k=[1,10]",
               "coherence.prior_samples=200", "cluster.restarts=2"]


@pytest.mark.slow
def test_eval_all_runs_every_task_and_prints_one_summary(eval_run, tmp_path, capsys):
    from mmae.evaluation.catalog import tasks

    eval_main([f"run={eval_run}", "task=all", f"output={tmp_path / 'all.json'}", *QUICK_TASKS])
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "all.json").read_text())
    assert list(summary["summary"]) == tasks() and summary["skipped"] == {}
    assert tasks()[:3] == ["probe", "anomaly", "denoise"]
    for name in tasks():  # each task's own file beside the summary, and its headline in the table
        assert (tmp_path / ("eval.json" if name == "probe" else f"{name}.json")).is_file(), name
        assert f"== {name} ==" in out
    table = out[out.rindex("\nsummary\n"):]
    assert "cluster accuracy (codes)" in table and "coherence from 2" in table
    probe = json.loads((tmp_path / "eval.json").read_text())["linear_probe_accuracy"]["all modalities"]
    assert summary["summary"]["probe"]["probe all"] == probe > 0.18  # chance 0.1; 0.25 measured


@pytest.mark.slow
def test_eval_all_with_an_export_alone_skips_the_tasks_that_need_the_decoder(eval_run, tmp_path, capsys):
    eval_main([f"encoder={eval_run / 'encoder'}", "task=all", f"output={tmp_path / 'all.json'}",
               *QUICK_TASKS])
    skipped = json.loads((tmp_path / "all.json").read_text())["skipped"]
    assert set(skipped) == {"anomaly", "denoise", "coherence", "compress"}
    assert all("needs the decoder" in reason for reason in skipped.values())
    assert "skipped compress: needs the decoder" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="mmae-eval: task=compress needs the decoder"):
        eval_main([f"encoder={eval_run / 'encoder'}", "task=compress"])


def test_a_task_named_by_import_path_needs_trust_code_and_an_evaluation_subclass():
    from mmae.cli.evaluate import user_task
    from mmae.core.errors import ArtifactError
    from mmae.evaluation.tasks.cluster import Cluster

    assert user_task("probe", trust_code=False) is None  # one of mmae's, by its name
    with pytest.raises(ArtifactError, match=r"task=mmae\.evaluation\.tasks\.cluster\.Cluster.*trust_code"):
        user_task("mmae.evaluation.tasks.cluster.Cluster", trust_code=False)
    assert user_task("mmae.evaluation.tasks.cluster.Cluster", trust_code=True) is Cluster
    assert Cluster.section == "cluster"
    with pytest.raises(ArtifactError, match="not a Evaluation subclass"):
        user_task("collections.OrderedDict", trust_code=True)
    with pytest.raises(ArtifactError, match="cannot import"):
        user_task("my_missing_package.MyTask", trust_code=True)


class Data(Evaluation):
    """A task whose section would be the `data` node of mmae-eval's config."""


def test_a_task_whose_section_is_a_key_of_mmae_evals_config_is_refused():
    from mmae.cli.evaluate import user_task
    from mmae.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"section 'data' is already a key of mmae-eval's config"):
        user_task(f"{__name__}.Data", trust_code=True)
