"""Encoder export and `load_encoder`: frozen features for downstream work, safe to load.

An export is a directory:
  - `model.safetensors`: the encoder's weights (preprocessing, per-modality encoders, fusion;
    no decoder), in the safetensors format, which holds tensors only and cannot run code;
  - `config.json`: what rebuilds the encoder (registered modality names and settings, fitted
    statistics included; fusion; sizes), the mmae version and the SHA-256 of the weights file;
  - what a modality needs besides (`Modality.export_assets`: e.g. `tokenizers/<modality>/`).

Each of the two files vouches for the other: config.json records the SHA-256 of
model.safetensors, and model.safetensors' metadata records `config_sha256`, the SHA-256 of
config.json's content (`config_digest`: its canonical JSON, without `weights_sha256`). So an
edited config.json is refused like an edited weights file, not loaded into different codes;
a change of whitespace or key order alone is no edit.

With `reference_pretrained=True`, frozen pretrained backbones are not stored: the export names
the model (its directory or hub name) and the SHA-256 of its weights, and loading reads them
from there, refusing a model whose weights are not the ones trained with.

`load_encoder` needs none of the training stack (no Lightning, Hydra or W&B), never
unpickles, and builds only mmae's own classes unless told `trust_code=True`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

import mmae.modalities  # noqa: F401  (registers mmae's own modalities)
from mmae.artifacts.atomic import atomic_directory
from mmae.artifacts.checkpoint import load_checkpoint_file
from mmae.artifacts.repo_ids import resolve_export
from mmae.core.errors import ArtifactError, ConfigError, ExportError, MMAEError
from mmae.core.fusion import Fusion
from mmae.core.modality import Modality
from mmae.core.model import Encoding, MultimodalAutoencoder, MultimodalEncoder
from mmae.core.registry import FUSIONS, MODALITIES
from mmae.version import __version__

#: 4: format 3, and model.safetensors' metadata records `config_sha256` (see the module
#: docstring); a format 4 export without it is refused. 3 (mmae 0.3): components are named by
#: their registered name ("poe", "image"), classes of the user's own by import path. 2 (mmae
#: 0.2): the same networks, named by mmae module path. 2 and 3 are still read, without the
#: config check (they recorded no `config_sha256`). Format 1 exports (mmae 0.1) built other networks.
FORMAT_VERSION = 4
READABLE_FORMATS = (2, 3, 4)
UNSIGNED_FORMATS = (2, 3)
WEIGHTS, CONFIG = "model.safetensors", "config.json"
CONFIG_HASH_KEY = "config_sha256"


def describe(model: MultimodalAutoencoder) -> dict:
    """A JSON-serialisable description that rebuilds `model` (see `build_model`)."""
    encoder = model.encoder
    return {
        "mmae_version": __version__,
        "format_version": FORMAT_VERSION,
        "modalities": {name: {"class": MODALITIES.reference(m), "config": m.config()}
                       for name, m in encoder.modalities.items()},
        "fusion": {"class": FUSIONS.reference(encoder.fusion), "config": encoder.fusion.config()},
        "encoder": {"embed_dim": encoder.embed_dim, "latent_dim": encoder.latent_dim,
                    "variational": encoder.variational, "latent_activation": encoder.latent_activation,
                    "top_k": encoder.top_k, "private_dim": encoder.private_dim},
        "decoder": {"hidden": model.decoder_hidden},
    }


def _build_modalities(description: Mapping, root: Path | None, trust_code: bool) -> dict:
    modalities = {}
    for name, entry in description["modalities"].items():
        cls = MODALITIES.resolve(entry.get("class"), Modality, trust_code, where=f"modality '{name}'")
        modalities[name] = cls.from_export(dict(entry.get("config") or {}), root)
    return modalities


def _fusion_factory(description: Mapping, trust_code: bool):
    cls = FUSIONS.resolve(description["fusion"].get("class"), Fusion, trust_code, where="fusion")
    options = dict(description["fusion"].get("config") or {})
    return lambda modalities, embed_dim, latent_dim: cls(modalities, embed_dim, latent_dim, **options)


def _encoder_options(description: Mapping) -> dict:
    keys = ("embed_dim", "latent_dim", "variational", "latent_activation")
    options = {key: description["encoder"][key] for key in keys}
    # (older exports have neither: no top-k, no private latents)
    return {**options, "top_k": description["encoder"].get("top_k"),
            "private_dim": description["encoder"].get("private_dim", 0)}


def build_model(description: Mapping, trust_code: bool = False) -> MultimodalAutoencoder:
    """The full autoencoder of a description (untrained weights); classes outside mmae only
    with `trust_code` (building them runs their module's code)."""
    return MultimodalAutoencoder(_build_modalities(description, None, trust_code),
                                 _fusion_factory(description, trust_code),
                                 decoder_hidden=description["decoder"]["hidden"],
                                 **_encoder_options(description))


def build_encoder(description: Mapping, root: Path | None = None,
                  trust_code: bool = False) -> MultimodalEncoder:
    """The encoder of a description (untrained weights); `root` is the export directory that
    modalities read their exported assets from (tokenizers)."""
    return MultimodalEncoder(_build_modalities(description, root, trust_code),
                             _fusion_factory(description, trust_code), **_encoder_options(description))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_digest(description: Mapping) -> str:
    """SHA-256 of an export description's content: its canonical JSON (sorted keys, no
    whitespace, UTF-8) without `weights_sha256`, which is written after the weights that record
    this digest. Indentation or key order of config.json do not change it; a changed value does."""
    content = {key: value for key, value in description.items() if key != "weights_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and bytes), to recognise weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def export_encoder(model: MultimodalAutoencoder, directory: str | Path,
                   reference_pretrained: bool = False, labels: Mapping | None = None) -> Path:
    """Write the encoder of `model` as an export directory; the write is atomic (a staging
    directory beside it, fsynced and renamed into place, see `mmae.artifacts.atomic.atomic_directory`), so a
    crash never leaves a half-written export, and an existing one is replaced whole.
    `reference_pretrained`: name frozen pretrained backbones instead of storing them (see the
    module docstring). `labels`: the training data's labels (`LabelMap.to_json`), kept in
    config.json so that class indices can be read back as the labels they stand for."""
    from safetensors.torch import save_file

    directory = Path(directory)
    with atomic_directory(directory) as staging:
        description = describe(model)
        description.pop("decoder")
        referenced = {}
        for name, modality in model.encoder.modalities.items():  # e.g. tokenizers, backbone configs
            config = description["modalities"][name]["config"]
            encoder = model.encoder.encoders[name]
            config.update(modality.export_assets(encoder, staging, name))
            reference = modality.referenced_weights(encoder) if reference_pretrained else None
            if reference is not None:  # the config names the model; its weights stay where they are
                prefix, naming = reference
                config.update(naming)
                referenced[name] = {"prefix": f"encoders.{name}.{prefix}",
                                    "sha256": weights_fingerprint(encoder.get_submodule(prefix.rstrip(".")))}
        if referenced:
            description["referenced_weights"] = referenced
        if labels:
            description["labels"] = dict(labels)
        state = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()
                 if not any(k.startswith(r["prefix"]) for r in referenced.values())}
        # The digest of the description as config.json will read back (tuples as lists, keys as
        # strings), so that loading computes the same one.
        digest = config_digest(json.loads(json.dumps(description)))
        save_file(state, staging / WEIGHTS,
                  metadata={"format": "pt", "mmae_version": __version__, CONFIG_HASH_KEY: digest})
        description["weights_sha256"] = sha256(staging / WEIGHTS)
        (staging / CONFIG).write_text(json.dumps(description, indent=2), encoding="utf-8")
    return directory


class FrozenEncoder(nn.Module):
    """An exported encoder: any non-empty subset of modalities -> codes `[B, latent_dim]`.

    Inputs are raw (as a dataset yields them: waveforms, pixels in [0, 1], token ids), or
    features when `preprocessed=True` (then modalities encoded from their raw input, speech
    backbones, also need `raw=`). For a VAE the code is the posterior mean, or a posterior
    sample when built with `sample=True`.

    The code is the shared one. Built with `private=True` (an encoder with private latents),
    it is followed by each modality's private code: `[B, feature_dim]` =
    `[B, latent_dim + M * private_dim]`, the shared code, then the private codes in
    `modalities` order (`feature_names`), zeros where a modality is missing.
    """

    def __init__(self, encoder: MultimodalEncoder, description: Mapping, sample: bool = False,
                 private: bool = False):
        super().__init__()
        if private and not encoder.private_dim:
            raise ConfigError("private=True asks for the private latents, but this encoder has none "
                              "(it was trained with model.private_dim=0): leave private off")
        self.encoder = encoder
        self.description = dict(description)
        self.sample = sample
        self.private = private
        self.requires_grad_(False)
        self.eval()

    @property
    def modalities(self) -> dict:
        return self.encoder.modalities

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    @property
    def labels(self) -> dict | None:
        """The training data's labels, `{"kind": "integer" | "string", "values": [...]}` with
        `values[i]` the label of class index `i`; None when it had none (or an older export)."""
        return self.description.get("labels")

    @property
    def private_dim(self) -> int:
        return self.encoder.private_dim

    @property
    def feature_dim(self) -> int:
        """The width of what `forward` returns."""
        return self.latent_dim + (len(self.modalities) * self.private_dim if self.private else 0)

    def feature_names(self) -> list[str]:
        """A name per output column: `shared.<j>`, then `<modality>.private.<j>` with `private=True`."""
        names = [f"shared.{j}" for j in range(self.latent_dim)]
        if self.private:
            names += [f"{m}.private.{j}" for m in self.modalities for j in range(self.private_dim)]
        return names

    def forward(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
                preprocessed: bool = False, raw: Mapping[str, Tensor] | None = None) -> Tensor:
        with torch.no_grad():
            features = dict(inputs) if preprocessed else self.encoder.preprocess(inputs)
            encoding = self.encoder(features, present, raw=raw if preprocessed else inputs)
            if self.sample:
                encoding = _sampled(encoding, self.private)
            return encoding.with_private(list(self.modalities)) if self.private else encoding.code


def _sampled(encoding: Encoding, private: bool) -> Encoding:
    """The encoding with posterior samples for codes: the shared one, and with `private` the
    private ones too (a missing modality's private part stays 0)."""
    if encoding.posterior is None:
        return encoding
    code = encoding.posterior.sample()
    if not private:
        return replace(encoding, code=code)
    codes = {name: torch.where(encoding.present[name].unsqueeze(1), posterior.sample(), 0.0)
             for name, posterior in encoding.private_posteriors.items()}
    return replace(encoding, code=code, private=codes)


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
    if config.get("format_version") not in READABLE_FORMATS:
        raise ExportError(f"{folder}: export format {config.get('format_version')!r} (mmae {version}), "
                          f"expected one of {READABLE_FORMATS}: its networks are not the ones this mmae "
                          "builds; "
                          "load it with the mmae that wrote it, or train and export again")
    return config


def _read_weights(folder: Path, expected_hash: str | None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the metadata of the export's weights file, once its SHA-256 matches."""
    from safetensors import SafetensorError, safe_open
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
        tensors = load_file(path)
        with safe_open(path, "pt") as handle:
            return tensors, dict(handle.metadata() or {})
    except SafetensorError as error:
        raise ExportError(f"{path} is corrupt: {error}") from None


def _check_config(folder: Path, config: Mapping, metadata: Mapping[str, str]) -> None:
    """config.json must be the one exported with these weights: its digest is the one recorded
    in their metadata. Only formats 2 and 3 recorded none; where a digest is recorded, it is
    checked whatever format config.json claims, so editing the format does not skip the check."""
    recorded = metadata.get(CONFIG_HASH_KEY)
    if recorded is None:
        if config.get("format_version") in UNSIGNED_FORMATS:
            return
        raise ExportError(f"{folder / CONFIG} cannot be checked: {folder / WEIGHTS} records no "
                          f"{CONFIG_HASH_KEY}, which export format {config.get('format_version')!r} "
                          "always records: the export was altered after it was written; re-export "
                          "from the checkpoint (mmae-export)")
    if recorded != config_digest(config):
        raise ExportError(f"{folder / CONFIG} was edited after export (its SHA-256 does not match the "
                          f"one recorded in {WEIGHTS}): the encoder it describes is no longer the one "
                          "trained with these weights and would give other codes; re-export from the "
                          "checkpoint (mmae-export) instead of editing the file")


def check_export(folder: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """The description and weights of the export in `folder`, once both are checked: an
    mmae export of a readable format, weights in safetensors with the recorded SHA-256, and a
    config.json unedited since export. Raises `ExportError` naming the file otherwise."""
    folder = Path(folder)
    config = _read_config(folder)
    weights, metadata = _read_weights(folder, config.get("weights_sha256"))
    _check_config(folder, config, metadata)
    return config, weights


def load_encoder(path: str | Path, sample: bool = False, trust_code: bool = False,
                 private: bool = False, revision: str | None = None) -> FrozenEncoder:
    """Rebuild an exported encoder, in eval mode with gradients off. `path` is an export
    directory or a Hugging Face Hub repo id (`"org/name"`, at `revision` if given: a branch,
    tag or commit), downloaded or read from the Hub's cache and checked the same way.

    An export that names a class outside mmae (a modality or fusion of your own) loads only
    with `trust_code=True`: building it imports and runs that class's module. It gives the
    shared code; `private=True` (an encoder trained with `model.private_dim > 0`) appends each
    modality's private code (see `FrozenEncoder`)."""
    folder = resolve_export(path, revision)
    config, weights = check_export(folder)
    try:
        encoder = build_encoder(config, root=folder, trust_code=trust_code)
    except MMAEError:
        raise
    except (TypeError, KeyError, AttributeError, ValueError, OSError) as error:
        raise ExportError(f"{folder / CONFIG} does not describe an encoder: {error}") from None
    referenced = config.get("referenced_weights") or {}
    _check_referenced(folder, encoder, referenced)
    try:
        missing, unexpected = encoder.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # a tensor of another shape than config.json implies
        raise ExportError(f"{folder / WEIGHTS} does not match config.json: {error}") from None
    missing = [k for k in missing if not any(k.startswith(r["prefix"]) for r in referenced.values())]
    if missing or unexpected:
        raise ExportError(f"{folder / WEIGHTS} does not match config.json: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    return FrozenEncoder(encoder, config, sample=sample, private=private)


def _check_referenced(folder: Path, encoder: MultimodalEncoder, referenced: Mapping) -> None:
    """The pretrained weights an export refers to must be the ones it was trained with."""
    for name, entry in referenced.items():
        prefix = entry["prefix"].removeprefix(f"encoders.{name}.").rstrip(".")
        if weights_fingerprint(encoder.encoders[name].get_submodule(prefix)) != entry["sha256"]:
            source = getattr(getattr(encoder.modalities[name], "backbone", None), "model", "?")
            raise ExportError(f"{folder}: modality '{name}' refers to the pretrained model {source}, whose "
                              "weights here are not the ones this encoder was trained with (SHA-256 "
                              "differs): give it the same model, or export with its weights stored")


def load_checkpoint_model(checkpoint_path: str | Path, trust_code: bool = False) -> MultimodalAutoencoder:
    """The trained autoencoder of an mmae training checkpoint (`load_checkpoint_file`: loaded
    with weights_only=True; a missing, truncated or pickle-planted file is an mmae error).
    Classes outside mmae in its description need `trust_code=True`, as for `load_encoder`."""
    path = checkpoint_path  # a local file or an fsspec URL
    checkpoint = load_checkpoint_file(path)
    if "mmae_model" not in checkpoint or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ArtifactError(f"{path} was not written by mmae-train (no model description)")
    try:
        model = build_model(checkpoint["mmae_model"], trust_code=trust_code)
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


__all__ = ["ExportError", "FrozenEncoder", "check_export", "describe", "export_encoder",
           "load_checkpoint_model", "load_encoder"]
