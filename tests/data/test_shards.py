"""Shards (`mmae-shard`, `data=stream`): written once from a manifest, read back as the manifest
reads, trained on like it, split among DDP ranks and workers, resumed exactly, and refused
with a message naming the shard or the setting when they do not fit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from litdata import StreamingDataset
from manifest_factory import build_manifest, manifest_overrides
from stall import wait_for

from mmae.artifacts.checkpoint import load_checkpoint_file
from mmae.cli.shard import main as shard_main
from mmae.cli.train import train
from mmae.config import CONFIG_DIR, build_modalities
from mmae.config.assembly import build_module
from mmae.core.errors import ConfigError, DataError
from mmae.data.manifest import ManifestDataset, fit_modalities
from mmae.data.shards import META, ShardSet

TESTS = Path(__file__).resolve().parents[1]  # the helper modules
QUIET = ["progress_bar=none", "trainer.enable_model_summary=false"]
ROWS = 200  # 160 train, 20 val, 20 test (a seeded split: the manifest has no split column)


def _modality_overrides(path: Path) -> list[str]:
    return [o for o in manifest_overrides(path) if o.startswith("modality")]


def _model_overrides(path: Path) -> list[str]:
    return [o for o in manifest_overrides(path) if o.startswith(("modality", "model."))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A manifest of images, audio, text and tabular columns (every 7th row misses one of the
    first three) and its shards, written by `mmae-shard`."""
    folder = tmp_path_factory.mktemp("corpus")
    manifest = build_manifest(folder / "data", rows=ROWS)
    shards = folder / "shards"
    shard_main(["data=manifest", f"data.path={manifest}", "data.num_workers=0",
                *_modality_overrides(manifest), f"output={shards}", "chunk_bytes=200KB"])
    return manifest, shards


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def _stream(manifest: Path, shards: Path, *extra: str) -> list[str]:
    return ["data=stream", f"data.path={shards}", "data.num_workers=0", *_model_overrides(manifest), *extra]


def _manifest_split(manifest: Path, split: str) -> ManifestDataset:
    cfg = _compose("shard", [f"data.path={manifest}", *_modality_overrides(manifest)])
    modalities = build_modalities(cfg.modality)
    train = ManifestDataset(manifest, modalities, "train", cache=False, seed=cfg.seed)
    fit_modalities(train)
    return train if split == "train" else ManifestDataset(manifest, modalities, split, cache=False,
                                                          seed=cfg.seed)


# -- writing and reading back ------------------------------------------------------------------
def test_mmae_shard_prints_samples_bytes_and_skips_of_every_split(tmp_path, capsys):
    manifest = build_manifest(tmp_path / "data", rows=40)
    (tmp_path / "data" / "images" / "5.png").write_bytes(b"not a png")  # row 6
    shard_main(["data=manifest", f"data.path={manifest}", "data.num_workers=0", "data.on_error=skip",
                *_modality_overrides(manifest), f"output={tmp_path / 'shards'}"])
    printed = capsys.readouterr().out
    meta = json.loads((tmp_path / "shards" / META).read_text())
    assert sum(s["samples"] for s in meta["splits"].values()) == 39
    assert sum(s["skipped"] for s in meta["splits"].values()) == 1
    assert "row 6, column 'image'" in " ".join(r for s in meta["splits"].values() for r in s["skipped_rows"])
    assert "row 6, column 'image'" in printed and "1 row(s) skipped" in printed
    for split, written in meta["splits"].items():
        assert f"{written['samples']:>9,} samples" in printed, split
        assert written["bytes"] == sum(f.stat().st_size for f in (tmp_path / "shards" / split).glob("*.bin"))


def test_a_corrupt_file_stops_mmae_shard_naming_the_row_unless_skipped(tmp_path):
    manifest = build_manifest(tmp_path / "data", rows=40)
    (tmp_path / "data" / "audio" / "3.wav").write_bytes(b"RIFF....")  # row 4
    with pytest.raises(SystemExit, match=r"manifest.csv, row 4, column 'audio'"):
        shard_main(["data=manifest", f"data.path={manifest}", "data.num_workers=0",
                    *_modality_overrides(manifest), f"output={tmp_path / 'shards'}"])
    assert not (tmp_path / "shards" / META).exists()  # an unfinished write is never taken for shards


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_each_split_reads_back_as_the_manifest_reads_it(corpus, split):
    manifest, shards = corpus
    expected = {int(s["index"]): s for s in (_manifest_split(manifest, split)[i]
                                            for i in range(len(_manifest_split(manifest, split))))}
    streamed = {int(item["index"]): item for item in StreamingDataset(str(shards / split))}
    assert streamed.keys() == expected.keys()
    assert any(not all(s["present"].values()) for s in expected.values())  # some modality missing
    for index, sample in expected.items():
        item = streamed[index]
        assert item["label"] == int(sample["label"])
        for name in ("image", "audio", "text", "tabular"):
            assert item["present"][name] == bool(sample["present"][name]), (index, name)
            assert torch.equal(item[name], sample["inputs"][name]), (index, name)


def test_the_statistics_stored_with_the_shards_are_the_manifest_paths(corpus, tmp_path):
    manifest, shards = corpus
    from_manifest, _ = build_module(_compose("train", [*manifest_overrides(manifest),
                                                       f"paths.output_dir={tmp_path / 'a'}"]))
    from_shards, datamodule = build_module(_compose("train", [*_stream(manifest, shards),
                                                             f"paths.output_dir={tmp_path / 'b'}"]))
    assert type(datamodule).__name__ == "StreamDataModule"
    for name, modality in from_manifest.model.modalities.items():
        other = from_shards.model.modalities[name]
        if modality.mean is not None:
            np.testing.assert_allclose(other.mean, modality.mean, rtol=1e-6, atol=1e-9, err_msg=name)
            np.testing.assert_allclose(other.std, modality.std, rtol=1e-6, atol=1e-9, err_msg=name)
    categories = from_manifest.model.modalities["tabular"].categories
    assert from_shards.model.modalities["tabular"].categories == categories == {"group": ["a", "b", "c"]}


def test_workers_each_read_their_own_chunks_and_all_of_them_together(corpus, tmp_path):
    manifest, shards = corpus
    _, datamodule = build_module(_compose("train", [*_stream(manifest, shards), "data.num_workers=2",
                                                    f"paths.output_dir={tmp_path}"]))
    for split, count in (("train", 160), ("val", 20)):
        datamodule.setup("fit")
        loader = datamodule.train_dataloader() if split == "train" else datamodule.val_dataloader()
        ids = [int(i) for batch in loader for i in batch.index]
        assert len(ids) == len(set(ids)) == count, split


@pytest.mark.slow
def test_shards_behind_a_url_are_read_through_the_chunk_cache(corpus, tmp_path):
    """LitData's `local:` prefix reads a directory as it reads an object store: the metadata
    downloaded, the chunks copied into `data.cache_dir` as they are read."""
    manifest, shards = corpus
    cache = tmp_path / "chunks"
    overrides = [*_stream(manifest, f"local:{shards}"), f"data.cache_dir={cache}",
                 f"paths.output_dir={tmp_path}"]
    _, datamodule = build_module(_compose("train", overrides))
    datamodule.setup("fit")
    ids = [int(i) for batch in datamodule.train_dataloader() for i in batch.index]
    assert sorted(ids) == sorted(int(s["index"]) for s in _manifest_split(manifest, "train"))
    assert len(list(cache.rglob("chunk-*.bin"))) == len(list((shards / "train").glob("chunk-*.bin")))
    with pytest.raises(DataError, match=r"data\.path=local:/nowhere: cannot read local:/nowhere/mmae-shards"
                                        r"\.json .* the credentials .* data\.storage_options"):
        ShardSet("local:/nowhere", cache_dir=str(cache))


# -- training ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_from_shards_gets_the_manifest_paths_metrics(corpus, tmp_path):
    """The batches, masks and statistics are the manifest path's, so the same weights score the
    same on either (float tolerance); trained weights differ only by the order of the samples
    (LitData shuffles chunks, then samples within a window; the manifest path permutes rows)."""
    manifest, shards = corpus
    epochs = ["trainer.max_epochs=3", "logger=none", *QUIET]
    streamed, objects = train(_compose("train", [*_stream(manifest, shards), *epochs,
                                                 f"paths.output_dir={tmp_path / 'stream'}"]))
    read, _ = train(_compose("train", [*manifest_overrides(manifest), *epochs,
                                       f"paths.output_dir={tmp_path / 'manifest'}"]))
    # The stream run's weights, validated on the manifest's validation split:
    _, manifest_data = build_module(_compose("train", [*manifest_overrides(manifest),
                                                       f"paths.output_dir={tmp_path / 'check'}"]))
    again = objects["trainer"].validate(objects["module"], datamodule=manifest_data, verbose=False)[0]
    for name, value in streamed["metrics"].items():
        assert again[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for name in ("val/loss", *(f"val/{m}/recon_all" for m in ("image", "audio", "text", "tabular"))):
        assert streamed["metrics"][name] == pytest.approx(read["metrics"][name], rel=0.1), name
    assert streamed["skipped_rows"] == {"train": 0, "val": 0}


def _mmae_train(*overrides: str) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))  # callbacks
    env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "mmae.train", "logger=csv", *QUIET, *overrides], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def _record(path: Path) -> list[str]:
    return ["+callbacks.ids._target_=record_ids.RecordIds", f"+callbacks.ids.path={path}"]


def _read_ids(path: Path) -> dict[tuple[int, int], list[int]]:
    """(rank, epoch) -> the sample ids that rank trained on that epoch, in order."""
    seen: dict[tuple[int, int], list[int]] = defaultdict(list)
    for line in path.read_text().splitlines():
        rank, epoch, *ids = map(int, line.split())
        seen[rank, epoch] += ids
    return seen


@pytest.mark.slow
def test_under_ddp_every_rank_reads_its_own_samples_and_together_all(corpus, tmp_path):
    manifest, shards = corpus
    ids = tmp_path / "ids.txt"
    # 160 training samples, 2 ranks, batches of 16: no remainder (LitData drops one per epoch
    # so that the ranks take the same number of steps; docs/scaling.md).
    _finish(_mmae_train(*_stream(manifest, shards, "data.batch_size=16"), "trainer=ddp_cpu",
                        "trainer.max_epochs=2", f"paths.output_dir={tmp_path / 'run'}", *_record(ids)))
    seen = _read_ids(ids)
    train_ids = {int(s["index"]) for s in _manifest_split(manifest, "train")}
    for epoch in (0, 1):
        first, second = seen[0, epoch], seen[1, epoch]
        assert len(first) == len(second) == 80
        assert not set(first) & set(second)
        assert set(first) | set(second) == train_ids
    assert seen[0, 0] != seen[0, 1]  # shuffled again each epoch
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["val/loss"] > 0


def _kill_at(overrides: list[str], marker: Path, epoch: int, batch: int) -> None:
    stall = ["+callbacks.stall._target_=stall.StallAt", f"+callbacks.stall.epoch={epoch}",
             f"+callbacks.stall.batch={batch}", f"+callbacks.stall.marker={marker}"]
    process = _mmae_train(*overrides, *stall)
    wait_for(marker, process)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    process.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("checkpoints, resumed_at", [
    ([], (0, 5)),  # checkpoints at epoch ends: the interrupted epoch is trained again, from its start
    (["+callbacks.model_checkpoint.every_n_train_steps=2"], (1, 6)),  # mid-epoch: from the loader's state
])
def test_killed_mid_epoch_and_resumed_from_last_ends_like_an_uninterrupted_run(corpus, tmp_path, checkpoints,
                                                                               resumed_at):
    manifest, shards = corpus
    run = [*_stream(manifest, shards), "trainer.max_epochs=3", *checkpoints]  # 5 steps an epoch
    killed = tmp_path / "killed"
    _kill_at([*run, f"paths.output_dir={killed}", *_record(tmp_path / "before.txt")],
             tmp_path / "stalled", epoch=1, batch=2)
    survivor = load_checkpoint_file(killed / "checkpoints" / "last.ckpt")
    assert (survivor["epoch"], survivor["global_step"]) == resumed_at
    output = _finish(_mmae_train(*run, f"paths.output_dir={killed}", "ckpt_path=last",
                                 *_record(tmp_path / "after.txt")))
    assert "Restoring states from the checkpoint path" in output
    _finish(_mmae_train(*run, f"paths.output_dir={tmp_path / 'straight'}",
                        *_record(tmp_path / "straight.txt")))

    straight = _read_ids(tmp_path / "straight.txt")
    before, after = _read_ids(tmp_path / "before.txt"), _read_ids(tmp_path / "after.txt")
    steps_done = resumed_at[1] - 5  # steps of the interrupted epoch that the checkpoint kept
    resumed_epoch = before[0, 1][: 32 * steps_done] + after[0, 1]
    assert resumed_epoch == straight[0, 1]  # no sample seen twice, none skipped, same order
    assert after[0, 2] == straight[0, 2]
    expected = load_checkpoint_file(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    actual = load_checkpoint_file(killed / "checkpoints" / "last.ckpt")
    assert actual["global_step"] == expected["global_step"]
    for name, weight in expected["state_dict"].items():
        assert torch.equal(weight, actual["state_dict"][name]), name


# -- features and evaluation -------------------------------------------------------------------
@pytest.mark.slow
def test_features_and_evaluation_read_shards(corpus, tmp_path):
    from mmae.cli.evaluate import main as evaluate_main
    from mmae.cli.features import main as features_main

    manifest, shards = corpus
    run = tmp_path / "run"
    train(_compose("train", [*_stream(manifest, shards), "trainer.max_epochs=1", "logger=none", *QUIET,
                             f"paths.output_dir={run}"]))
    features_main([f"encoder={run / 'encoder'}", "data=stream", f"data.path={shards}", "data.num_workers=0",
                   f"output={tmp_path / 'stream.npz'}"])
    features_main([f"encoder={run / 'encoder'}", *manifest_overrides(manifest)[:4],
                   f"output={tmp_path / 'manifest.npz'}"])
    streamed, read = np.load(tmp_path / "stream.npz"), np.load(tmp_path / "manifest.npz")
    assert len(streamed["ids"]) == 20
    np.testing.assert_array_equal(streamed["ids"], read["ids"])  # the test split, in row order
    np.testing.assert_allclose(streamed["features"], read["features"], atol=1e-6)
    np.testing.assert_array_equal(streamed["labels"], read["labels"])

    evaluate_main([f"run={run}", "task=probe"])  # the run's own data: data=stream
    report = json.loads((run / "eval.json").read_text())
    assert report["samples"] == {"train": 160, "test": 20}
    assert {"all modalities", "image only", "tabular only"} <= set(report["linear_probe_accuracy"])
    assert set(report["imputation"]) == {"image", "audio", "text", "tabular"}


# -- what is refused ---------------------------------------------------------------------------
def _copy(shards: Path, folder: Path) -> Path:
    import shutil

    return Path(shutil.copytree(shards, folder / "copy"))


def test_a_shard_directory_from_another_format_is_refused_naming_both_versions(corpus, tmp_path):
    copy = _copy(corpus[1], tmp_path)
    meta = json.loads((copy / META).read_text())
    (copy / META).write_text(json.dumps({**meta, "format": 0, "mmae_version": "0.1.0"}))
    with pytest.raises(DataError, match=r"mmae 0\.1\.0 in shard format 0; mmae .* reads format 1"):
        ShardSet(str(copy))


def test_unfinished_or_foreign_directories_are_refused(corpus, tmp_path):
    copy = _copy(corpus[1], tmp_path)
    (copy / META).unlink()
    with pytest.raises(DataError, match="not finished"):
        ShardSet(str(copy))
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="not an mmae shard directory"):
        ShardSet(str(tmp_path / "other"))
    with pytest.raises(DataError, match="no such shard directory"):
        ShardSet(str(tmp_path / "nowhere"))


def test_a_truncated_shard_is_named(corpus, tmp_path):
    copy = _copy(corpus[1], tmp_path)
    chunk = sorted((copy / "train").glob("*.bin"))[-1]
    chunk.write_bytes(chunk.read_bytes()[:-100])
    truncated = rf"{chunk.name}: \d+ bytes, .*index.json says \d+: the shard is truncated"
    with pytest.raises(DataError, match=truncated):
        ShardSet(str(copy)).split("train")


@pytest.mark.parametrize("change, message", [
    (["modality=[image,audio,text,tabular,vector]"],
     r"holds modalities \['audio', 'image', 'tabular', 'text'\], the config has \['audio', 'image', "
     r"'tabular', 'text', 'vector'\]: set modality=\[image,audio,text,tabular\]"),
    (["modality.image.size=32"], r"modality\.image\.size: the shards .* were decoded with \[16, 16\], the "
                                 r"config says \[32, 32\]"),
    (["modality.audio.sample_rate=16000"], r"modality\.audio\.sample_rate: .* decoded with 8000"),
    (["modality.tabular.categorical=[]"], r"modality\.tabular\.categorical"),
])
def test_a_config_that_does_not_fit_the_shards_names_the_setting(corpus, tmp_path, change, message):
    manifest, shards = corpus
    cfg = _compose("train", [*_stream(manifest, shards), *change, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=message):
        build_module(cfg)


def test_other_log_mel_settings_refit_the_statistics_from_the_shards(corpus, tmp_path):
    manifest, shards = corpus
    module, _ = build_module(_compose("train", [*_stream(manifest, shards), "modality.audio.n_mels=16",
                                                f"paths.output_dir={tmp_path}"]))
    assert len(module.model.modalities["audio"].mean) == 16  # not the stored 32 bands


def test_an_s3_url_without_credentials_names_the_setting(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup (no network)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"data\.path=s3://bucket/shards: no AWS credentials found; set "
                                          r"AWS_ACCESS_KEY_ID .* data\.storage_options"):
        ShardSet("s3://bucket/shards")


def test_shards_are_never_written_over(corpus, tmp_path):
    manifest, shards = corpus
    with pytest.raises(SystemExit, match="holds shards already"):
        shard_main(["data=manifest", f"data.path={manifest}", *_modality_overrides(manifest),
                    f"output={shards}"])
    with pytest.raises(SystemExit, match="give output=DIR"):
        shard_main(["data=manifest", f"data.path={manifest}", *_modality_overrides(manifest)])
    with pytest.raises(SystemExit, match="chunk_bytes='64XB': give a number of bytes or a size such as 64MB"):
        shard_main(["data=manifest", f"data.path={manifest}", *_modality_overrides(manifest),
                    f"output={tmp_path / 'new'}", "chunk_bytes=64XB"])
    assert not (tmp_path / "new").exists()
    with pytest.raises(SystemExit, match="mmae-shard reads a manifest"):
        shard_main(["data=synthetic", f"output={tmp_path / 'x'}"])
