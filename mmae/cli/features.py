"""`mmae-features`: frozen features of a dataset from an exported encoder.

    mmae-features encoder=DIR_OR_REPO_ID output=features.npz [split=test] ['modalities=[image]']
                  [private=true] [data=manifest data.path=FILE]

Writes `.npz` (arrays `features`, `ids`, `labels`, `labelled`, and `label_names` for string
labels), `.npy` (features only) or `.parquet` (columns `id`, `label`, `f0`...`fN`), atomically.
Labels come back as the data gave them: integer labels as the same integers (`labelled` is
False where a row has none), string labels as class indices into `label_names` in `.npz`
(-1: none) and as the strings in Parquet (null: none). `modalities` restricts the encoder's input
to a subset (default: all it was trained on); samples with none of them are left out.

The features are the shared code `[N, latent_dim]`. `private=true` (an encoder trained with
`model.private_dim > 0`) appends every modality's private code: `[N, latent_dim + M * private_dim]`,
the shared code first, then the encoder's modalities in their order (`config.json`'s
`modalities`), `private_dim` columns each, zeros where a modality is missing or left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mmae.artifacts.atomic import write_atomic
from mmae.artifacts.export import load_encoder
from mmae.cli.runner import run_command
from mmae.config import build, compose_config
from mmae.core.errors import ConfigError
from mmae.data.batch import SPLITS
from mmae.data.labels import UNLABELLED, LabelMap
from mmae.evaluation.codes import Features, encode_batches

FORMATS = (".npz", ".npy", ".parquet")


def save_features(features: Features, path: str | Path, label_map: LabelMap | None = None) -> Path:
    """Write features in the format named by the file's extension, with the labels of
    `label_map` (the data's; without one, the class indices)."""
    path = Path(path)
    codes, ids, indices = (t.cpu().numpy() for t in (features.codes, features.ids, features.labels))
    labelled = indices != UNLABELLED
    strings = label_map is not None and label_map.kind == "string"
    labels = label_map.labels_of(indices) if label_map is not None and not strings else indices
    if path.suffix == ".npz":
        names = {"label_names": np.asarray(label_map.values, dtype=str)} if strings else {}

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.savez(handle, features=codes, ids=ids, labels=labels, labelled=labelled, **names)
    elif path.suffix == ".npy":
        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.save(handle, codes)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        label_column = label_map.labels_of(indices) if strings else labels
        label = pa.array(label_column, mask=~labelled)  # null where a row has no label
        columns = {"id": ids, "label": label, **{f"f{j}": codes[:, j] for j in range(codes.shape[1])}}

        def write(tmp: Path) -> None:
            pq.write_table(pa.table(columns), tmp)
    else:
        raise ConfigError(f"output must end with one of {FORMATS}, got '{path.name}'")
    return write_atomic(path, write)


def main(argv: list[str] | None = None) -> None:
    run_command("mmae-features", lambda: _features(sys.argv[1:] if argv is None else argv))


def _features(overrides: list[str]) -> None:
    cfg = compose_config("features", overrides)
    if not cfg.encoder or not cfg.output:
        raise ConfigError("give encoder=DIR (an mmae export, or a Hub repo id org/name) and output=FILE "
                          "(.npz, .npy, .parquet)")
    if cfg.split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got '{cfg.split}'")
    if Path(cfg.output).suffix not in FORMATS:
        raise ConfigError(f"output must end with one of {FORMATS}, got '{cfg.output}'")
    encoder = load_encoder(cfg.encoder, trust_code=cfg.trust_code, private=cfg.private, revision=cfg.revision)
    names = list(cfg.modalities) if cfg.modalities else list(encoder.modalities)
    unknown = [n for n in names if n not in encoder.modalities]
    if unknown:
        raise ConfigError(f"modalities {unknown} are not in the encoder; "
                          f"it has {list(encoder.modalities)}")
    datamodule = build(cfg.data, _partial_=True)(modalities=encoder.modalities)
    datamodule.require_split(cfg.split, f"mmae-features split={cfg.split}")
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader,
              "test": datamodule.test_dataloader}[cfg.split]()
    features = encode_batches(encoder, loader, names, progress=True)
    path = save_features(features, cfg.output, getattr(datamodule.dataset(cfg.split), "label_map", None))
    layout = (f" (shared {encoder.latent_dim}, then {encoder.private_dim} private per modality of "
              f"{'+'.join(encoder.modalities)})" if encoder.private else "")
    print(f"mmae-features: {features.codes.shape[0]} x {features.codes.shape[1]} features{layout} of "
          f"{'+'.join(names)} ({cfg.split}) in {path}")


if __name__ == "__main__":
    main()
