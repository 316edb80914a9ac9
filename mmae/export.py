"""Encoder export and `load_encoder`: frozen features for downstream work, safe to load.

An export is a directory:
  - `model.safetensors`: the encoder's weights (preprocessing, per-modality encoders, fusion;
    no decoder), in the safetensors format, which holds tensors only and cannot run code;
  - `config.json`: what rebuilds the encoder (modality kinds and settings, fitted statistics
    included; fusion; sizes), the mmae version and the SHA-256 of the weights file;
  - `tokenizers/<modality>/`: the tokenizer of each text modality that has one.

`load_encoder` needs none of the training stack (no Lightning, Hydra or W&B), never
unpickles, and builds only the classes mmae itself provides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmae.checkpoint import load_checkpoint_file
from mmae.errors import ArtifactError, ConfigError, MMAEError
from mmae.fusion import AttentionFusion, ConcatFusion, Fusion, MeanFusion, MoEFusion, MoPoEFusion, PoEFusion
from mmae.io import atomic_directory
from mmae.modalities import MODALITY_KINDS
from mmae.modalities.text import TextModality
from mmae.model import MultimodalAutoencoder, MultimodalEncoder
from mmae.version import __version__

#: 2 (mmae 0.2): encoders standardise continuous inputs with fitted statistics and size their
#: CNNs from the input; format 1 exports (mmae 0.1) built other networks.
FORMAT_VERSION = 2
WEIGHTS, CONFIG = "model.safetensors", "config.json"
FUSION_CLASSES: dict[str, type[Fusion]] = {
    f"mmae.fusion.{cls.__name__}": cls
    for cls in (MeanFusion, ConcatFusion, AttentionFusion, PoEFusion, MoEFusion, MoPoEFusion)}
MODALITY_CLASSES = {f"mmae.modalities.{cls.__name__}": cls for cls in MODALITY_KINDS.values()}


class ExportError(ArtifactError):
    """An export directory is missing, corrupt, tampered with, or from an incompatible mmae."""


def _qualname(obj: Any, allowed: Mapping[str, type]) -> str:
    for name, cls in allowed.items():
        if type(obj) is cls:
            return name
    raise ConfigError(f"{type(obj).__name__} is not one of mmae's classes {sorted(allowed)}; "
                      "only those can be exported")


def describe(model: MultimodalAutoencoder) -> dict:
    """A JSON-serialisable description that rebuilds `model` (see `build_model`)."""
    encoder = model.encoder
    return {
        "mmae_version": __version__,
        "format_version": FORMAT_VERSION,
        "modalities": {name: {"class": _qualname(m, MODALITY_CLASSES), "config": m.config()}
                       for name, m in encoder.modalities.items()},
        "fusion": {"class": _qualname(encoder.fusion, FUSION_CLASSES), "config": encoder.fusion.config()},
        "encoder": {"embed_dim": encoder.embed_dim, "latent_dim": encoder.latent_dim,
                    "variational": encoder.variational, "latent_activation": encoder.latent_activation},
        "decoder": {"hidden": model.decoder_hidden},
    }


def _allowed(kind: str, name: Any, allowed: Mapping[str, type]) -> type:
    if name not in allowed:
        raise ExportError(f"{kind} class {name!r} is not an mmae class; allowed: {sorted(allowed)}")
    return allowed[name]


def _build_modalities(description: Mapping, root: Path | None = None) -> dict:
    modalities = {}
    for name, entry in description["modalities"].items():
        cls = _allowed(f"modality '{name}'", entry.get("class"), MODALITY_CLASSES)
        config = dict(entry.get("config") or {})
        if root is not None and config.get("tokenizer"):
            config["tokenizer"] = str(root / config["tokenizer"])
        modalities[name] = cls(**config)
    return modalities


def _fusion_factory(description: Mapping):
    cls = _allowed("fusion", description["fusion"].get("class"), FUSION_CLASSES)
    options = dict(description["fusion"].get("config") or {})
    return lambda modalities, embed_dim, latent_dim: cls(modalities, embed_dim, latent_dim, **options)


def _encoder_options(description: Mapping) -> dict:
    keys = ("embed_dim", "latent_dim", "variational", "latent_activation")
    return {key: description["encoder"][key] for key in keys}


def build_model(description: Mapping) -> MultimodalAutoencoder:
    """The full autoencoder of a description (untrained weights)."""
    return MultimodalAutoencoder(_build_modalities(description), _fusion_factory(description),
                                 decoder_hidden=description["decoder"]["hidden"],
                                 **_encoder_options(description))


def build_encoder(description: Mapping, root: Path | None = None) -> MultimodalEncoder:
    """The encoder of a description (untrained weights); `root` resolves exported tokenizers."""
    return MultimodalEncoder(_build_modalities(description, root), _fusion_factory(description),
                             **_encoder_options(description))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _self_contained_text(description: dict, encoder: MultimodalEncoder, folder: Path) -> None:
    """Make text modalities rebuildable from the export alone: the backbone's architecture
    goes into config.json (weights are in the safetensors file), the tokenizer into the folder."""
    for name, modality in encoder.modalities.items():
        if not isinstance(modality, TextModality):
            continue
        config = description["modalities"][name]["config"]
        backbone = encoder.encoders[name].backbone
        config["model"], config["model_config"] = None, backbone.config.to_dict()
        if modality.tokenizer_name is not None:
            target = Path("tokenizers") / name
            modality.tokenizer.tokenizer.save_pretrained(folder / target)
            config["tokenizer"] = target.as_posix()


def export_encoder(model: MultimodalAutoencoder, directory: str | Path) -> Path:
    """Write the encoder of `model` as an export directory; the write is atomic (a staging
    directory beside it, fsynced and renamed into place, see `mmae.io.atomic_directory`), so a
    crash never leaves a half-written export, and an existing one is replaced whole."""
    from safetensors.torch import save_file

    directory = Path(directory)
    with atomic_directory(directory) as staging:
        description = describe(model)
        description.pop("decoder")
        _self_contained_text(description, model.encoder, staging)
        state = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
        save_file(state, staging / WEIGHTS, metadata={"format": "pt", "mmae_version": __version__})
        description["weights_sha256"] = sha256(staging / WEIGHTS)
        (staging / CONFIG).write_text(json.dumps(description, indent=2), encoding="utf-8")
    return directory


class FrozenEncoder(nn.Module):
    """An exported encoder: any non-empty subset of modalities -> codes `[B, latent_dim]`.

    Inputs are raw (as a dataset yields them: waveforms, pixels in [0, 1], token ids), or
    features when `preprocessed=True`. For a VAE the code is the posterior mean, or a
    posterior sample when built with `sample=True`.
    """

    def __init__(self, encoder: MultimodalEncoder, description: Mapping, sample: bool = False):
        super().__init__()
        self.encoder = encoder
        self.description = dict(description)
        self.sample = sample
        self.requires_grad_(False)
        self.eval()

    @property
    def modalities(self) -> dict:
        return self.encoder.modalities

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    def forward(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
                preprocessed: bool = False) -> Tensor:
        with torch.no_grad():
            features = dict(inputs) if preprocessed else self.encoder.preprocess(inputs)
            encoding = self.encoder(features, present)
            if self.sample and encoding.posterior is not None:
                return encoding.posterior.sample()
            return encoding.code


def _read_config(folder: Path) -> dict:
    if not folder.is_dir():
        raise ExportError(f"no export directory at {folder}")
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise ExportError(f"{config_path} is missing: not an mmae export")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{config_path} is truncated or corrupt: not valid JSON ({error})") from None
    except OSError as error:
        raise ExportError(f"cannot read {config_path}: {error.strerror or error}") from None
    if not isinstance(config, dict):
        raise ExportError(f"{config_path} holds a JSON {type(config).__name__}, not an export description")
    version = str(config.get("mmae_version", "?"))
    if version.split(".")[0] != __version__.split(".")[0]:
        raise ExportError(f"{folder} was exported by mmae {version}; this is mmae {__version__}: "
                          f"major versions differ (expected {__version__.split('.')[0]}.x)")
    if config.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{folder}: export format {config.get('format_version')!r} (mmae {version}), "
                          f"expected {FORMAT_VERSION}: its networks are not the ones this mmae builds; "
                          "load it with the mmae that wrote it, or train and export again")
    return config


def _read_weights(folder: Path, expected_hash: str | None) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS
    if not path.is_file():
        raise ExportError(f"weights file {path} is missing")
    with path.open("rb") as handle:
        head = handle.read(9)
    # A safetensors file starts with an 8-byte header length, then its JSON header. Anything
    # else (a pickle, a zip from torch.save) is refused before it is parsed.
    if len(head) < 9:
        raise ExportError(f"{path} is truncated ({len(head)} bytes): not a safetensors file")
    if head[8:9] != b"{":
        raise ExportError(f"{path} is not a safetensors file (pickled or torch.save weights are "
                          "refused: they can run code when loaded)")
    if not expected_hash:
        raise ExportError(f"{folder / CONFIG} records no weights_sha256, so {path} cannot be "
                          "checked: not an export written by mmae, or its config.json was edited")
    actual = sha256(path)
    if actual != expected_hash:
        raise ExportError(f"{path}: SHA-256 {actual[:16]}... does not match config.json's "
                          f"{str(expected_hash)[:16]}...: the file is truncated or was modified")
    try:
        return load_file(path)
    except SafetensorError as error:
        raise ExportError(f"{path} is corrupt: {error}") from None


def load_encoder(path: str | Path, sample: bool = False) -> FrozenEncoder:
    """Rebuild an exported encoder, in eval mode with gradients off."""
    folder = Path(path)
    config = _read_config(folder)
    weights = _read_weights(folder, config.get("weights_sha256"))
    try:
        encoder = build_encoder(config, root=folder)
    except MMAEError:
        raise
    except (TypeError, KeyError, AttributeError, ValueError, OSError) as error:
        raise ExportError(f"{folder / CONFIG} does not describe an encoder: {error}") from None
    try:
        missing, unexpected = encoder.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # a tensor of another shape than config.json implies
        raise ExportError(f"{folder / WEIGHTS} does not match config.json: {error}") from None
    if missing or unexpected:
        raise ExportError(f"{folder / WEIGHTS} does not match config.json: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    return FrozenEncoder(encoder, config, sample=sample)


class _PositionalEncoder(nn.Module):
    """The encoder with positional tensors (raw inputs, then presence masks), as ONNX needs."""

    def __init__(self, encoder: FrozenEncoder):
        super().__init__()
        self.encoder = encoder
        self.names = list(encoder.modalities)

    def forward(self, *tensors: Tensor) -> Tensor:
        n = len(self.names)
        return self.encoder(dict(zip(self.names, tensors[:n], strict=True)),
                            dict(zip(self.names, tensors[n:], strict=True)))


def _example_inputs(encoder: FrozenEncoder, batch: int, generator: torch.Generator) -> list[Tensor]:
    """Distinct random raw inputs for each modality, then masks with every sample covered."""
    raw = []
    for modality in encoder.modalities.values():
        if modality.dtype_kind == "long":
            high = getattr(modality, "vocab_size", 2)
            raw.append(torch.randint(1, high, (batch, *modality.raw_shape), generator=generator))
        elif modality.kind == "tabular":
            raw.append(torch.zeros(batch, *modality.raw_shape))  # category index 0 is always valid
        else:
            raw.append(torch.rand(batch, *modality.raw_shape, generator=generator))
    masks = torch.rand(batch, len(raw), generator=generator) < 0.6
    masks[torch.arange(batch), torch.randint(len(raw), (batch,), generator=generator)] = True
    return raw + [masks[:, i].clone() for i in range(len(raw))]


def export_onnx(encoder: FrozenEncoder, path: str | Path) -> float | None:
    """Write `encoder` as an ONNX graph (`torch.onnx.export(dynamo=True)`, dynamic batch) whose
    inputs are the raw modalities then one presence mask each, in `encoder.modalities` order.

    Returns the largest difference to PyTorch on a fresh random batch with missing modalities
    (None when onnxruntime is not installed to check it).
    """
    try:
        import onnxscript  # noqa: F401 - torch.onnx's dynamo exporter needs it
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra: pip install 'mmae[onnx]'") from None
    path = Path(path)
    wrapper = _PositionalEncoder(encoder).eval()
    names = [*wrapper.names, *(f"present_{n}" for n in wrapper.names)]
    batch = torch.export.Dim("batch", min=1)
    generator = torch.Generator().manual_seed(0)
    examples = _example_inputs(encoder, 2, generator)
    torch.onnx.export(wrapper, tuple(examples), path, dynamo=True, input_names=names,
                      output_names=["code"], dynamic_shapes=(tuple({0: batch} for _ in examples),))
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path))
    inputs = _example_inputs(encoder, 5, generator)
    (output,) = session.run(None, {name: x.numpy() for name, x in zip(names, inputs, strict=True)})
    return float((torch.from_numpy(output) - wrapper(*inputs)).abs().max())


def load_checkpoint_model(checkpoint_path: str | Path) -> MultimodalAutoencoder:
    """The trained autoencoder of an mmae training checkpoint (`load_checkpoint_file`: loaded
    with weights_only=True; a missing, truncated or pickle-planted file is an mmae error)."""
    path = checkpoint_path  # a local file or an fsspec URL
    checkpoint = load_checkpoint_file(path)
    if "mmae_model" not in checkpoint or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ArtifactError(f"{path} was not written by mmae-train (no model description)")
    try:
        model = build_model(checkpoint["mmae_model"])
    except MMAEError:
        raise
    except (TypeError, KeyError, AttributeError, ValueError) as error:
        raise ArtifactError(f"{path}: its model description does not build a model ({error})") from None
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # weights of other shapes than its own description
        raise ArtifactError(f"{path}: the weights do not match its model description "
                            f"({_first_line(error)})") from None
    return model.eval()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return " ".join(lines[:2]) if lines else type(error).__name__


def main(argv: list[str] | None = None) -> None:
    """`mmae-export CHECKPOINT [--output DIR]`: a training checkpoint -> an encoder export."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="mmae-export", description=main.__doc__)
    parser.add_argument("checkpoint", help="a .ckpt written by mmae-train")
    parser.add_argument("--output", help="export directory (default: <run dir>/encoder)")
    parser.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                        help="onnx: also write encoder.onnx, checked against PyTorch")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    output = Path(args.output) if args.output else checkpoint.resolve().parent.parent / "encoder"
    try:
        export_encoder(load_checkpoint_model(checkpoint), output)
        print(f"mmae-export: encoder written to {output}")
        if args.format == "onnx":
            error = export_onnx(load_encoder(output), output / "encoder.onnx")
            check = ("not checked (install onnxruntime)" if error is None
                     else f"max |ONNX - PyTorch| = {error:.2e} on a random batch")
            print(f"mmae-export: ONNX graph written to {output / 'encoder.onnx'}; parity: {check}")
    except MMAEError as error:
        sys.exit(f"mmae-export: {error}")


__all__ = ["ExportError", "FrozenEncoder", "describe", "export_encoder", "export_onnx", "load_encoder"]

if __name__ == "__main__":
    main()
