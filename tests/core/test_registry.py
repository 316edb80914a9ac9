"""The one registry: every component mmae ships is registered, has its config file, and is
named in exports by its registered name; the registry's own rules."""

import re
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import get_class

import mmae.core.objectives
import mmae.modalities  # noqa: F401  (registers the modalities)
from mmae.config import CONFIG_DIR
from mmae.core.errors import ConfigError, ExportError
from mmae.core.fusion import Fusion, MeanFusion, PoEFusion
from mmae.core.modality import Modality
from mmae.core.registry import FUSIONS, LOSS_TERMS, MODALITIES, Registry
from mmae.data.synthetic import SyntheticMultimodal


def _targets(path: Path) -> list[str]:
    """Every `_target_` value in a YAML file, however deep."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.append(node["_target_"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(path.read_text()))
    return found


@pytest.mark.parametrize("registry, group", [(MODALITIES, "modality"), (FUSIONS, "fusion")],
                         ids=["modality", "fusion"])
def test_each_registered_component_has_its_config_and_each_config_is_registered(registry, group):
    files = {p.stem: p for p in (CONFIG_DIR / group).glob("*.yaml")}
    assert set(files) == set(registry.names())
    for name, path in files.items():
        (target,) = _targets(path)
        assert get_class(target) is registry[name], f"conf/{group}/{name}.yaml builds {target}"


def test_every_loss_term_is_configured_somewhere_and_every_configured_term_is_registered():
    targets = {t for path in CONFIG_DIR.rglob("*.yaml") for t in _targets(path)}
    terms = {get_class(t) for t in targets
             if t.startswith("mmae.core.objectives.") and not t.endswith(".Objective")}
    assert terms == {LOSS_TERMS[name] for name in LOSS_TERMS}


def test_names_are_what_the_configs_and_exports_use():
    assert set(MODALITIES.names()) == {"audio", "image", "tabular", "text", "vector"}
    assert FUSIONS.names() == ["mean", "concat", "attention", "poe", "moe", "mopoe"]
    assert FUSIONS.name_of(PoEFusion) == "poe" and FUSIONS.reference(PoEFusion(["a"], 4, 2)) == "poe"


def test_a_name_cannot_be_taken_twice():
    registry = Registry("widget")
    registry.register("w")(MeanFusion)
    registry.register("w")(MeanFusion)  # the same class again (a module reloaded) is fine
    with pytest.raises(ConfigError, match="widget name 'w' is taken by MeanFusion; choose another for "
                                          "PoEFusion"):
        registry.register("w")(PoEFusion)


class SubclassOfMean(MeanFusion):
    """A user's class: a subclass of a registered one is not that registered class."""


def test_user_classes_are_named_by_import_path_and_need_trust_to_be_built():
    fusion = SubclassOfMean(["a"], 4, 2)
    reference = FUSIONS.reference(fusion)
    assert reference == f"{__name__}:SubclassOfMean"
    with pytest.raises(ExportError, match=rf"fusion class '{re.escape(reference)}' is not one of mmae's "
                                          r"\(mean, .*trust_code=True"):
        FUSIONS.resolve(reference, Fusion, where="fusion")
    assert FUSIONS.resolve(reference, Fusion, trust_code=True) is SubclassOfMean
    with pytest.raises(ExportError, match="is not a Modality subclass"):
        MODALITIES.resolve(reference, Modality, trust_code=True, where="modality 'x'")


def test_classes_that_loading_could_not_find_are_refused_when_saved():
    class Local(MeanFusion):
        pass

    with pytest.raises(ConfigError, match=r"fusion class .*Local .* cannot be saved: define it at the top "
                                          "level of an importable module"):
        FUSIONS.reference(Local(["a"], 4, 2))


def test_mmae_0_2_module_paths_still_name_their_classes():
    assert FUSIONS.resolve("mmae.fusion.PoEFusion", Fusion) is PoEFusion
    assert MODALITIES.resolve("mmae.modalities.ImageModality", Modality) is MODALITIES["image"]


def test_the_synthetic_data_renders_every_registered_modality_that_has_a_view():
    """Each registered modality either renders a synthetic view through its own hook or says
    it has none; the synthetic data keeps no list of kinds."""
    built = {"image": {"channels": 1, "size": 8}, "vector": {"dim": 4},
             "audio": {"sample_rate": 4000, "duration": 0.25, "n_fft": 128, "hop_length": 32, "n_mels": 8},
             "text": {"model_config": {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                       "intermediate_size": 8}, "max_length": 8},
             "tabular": {"numeric": ["x"]}}
    assert set(built) == set(MODALITIES.names())
    rendered = []
    for name in MODALITIES:
        modality = MODALITIES[name](**built[name])
        try:
            data = SyntheticMultimodal({name: modality}, num_samples=20, missing_rate=0.0)
        except ConfigError as error:
            assert f"cannot render modality '{name}'" in str(error) and "has no synthetic view" in str(error)
            continue
        x = data[0]["inputs"][name]
        assert tuple(x.shape) == modality.raw_shape and torch.isfinite(x.float()).all()
        rendered.append(name)
    assert rendered == ["audio", "image", "text", "vector"]
