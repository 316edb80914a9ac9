"""Components of the user's own, in a package outside mmae, with no mmae edit: a modality (a
`VectorModality` subclass), a fusion and a loss term, trained through the real entry point,
resumed, exported and loaded back (only with `trust_code=True`)."""

from __future__ import annotations

import importlib
import json
import re
import sys
import textwrap

import pytest
import torch
from hydra import compose, initialize_config_dir

import mmae
from mmae.artifacts.export import describe, export_encoder
from mmae.cli.train import train
from mmae.config import CONFIG_DIR
from mmae.core.errors import ConfigError
from mmae.core.fusion import Fusion, MeanFusion
from mmae.data.batch import features_of, split_batch
from mmae.modalities import ImageModality, VectorModality

PACKAGE = "mylab_components_test"  # a name no other test imports (modules stay imported)

COMPONENTS = '''
"""A lab's own components: nothing here is registered with mmae."""

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmae.core.fusion import Fusion
from mmae.core.nn import mlp
from mmae.core.objectives import LossTerm, Step, TermValue
from mmae.modalities import VectorModality


class BottleneckVector(VectorModality):
    """A vector whose encoder squeezes it through a `bottleneck`-wide, layer-normed layer."""

    def __init__(self, *args, bottleneck: int = 16, **kwargs):
        super().__init__(*args, **kwargs)
        self.bottleneck = int(bottleneck)

    def build_encoder(self, embed_dim: int) -> nn.Module:
        return nn.Sequential(mlp([self.shape[0], *self.hidden, self.bottleneck], activate_last=True),
                             nn.LayerNorm(self.bottleneck), nn.Linear(self.bottleneck, embed_dim))

    def config(self) -> dict:
        return {**super().config(), "bottleneck": self.bottleneck}


class GatedFusion(Fusion):
    """A gated mean: each present modality's projection, weighted by a softmax over the
    present modalities of a learned per-sample gate (scaled by `1 / temperature`)."""

    def __init__(self, modalities: Sequence[str], embed_dim: int, latent_dim: int,
                 temperature: float = 1.0):
        super().__init__(modalities, embed_dim, latent_dim)
        self.temperature = float(temperature)
        self.projections = nn.ModuleDict({m: nn.Linear(embed_dim, latent_dim) for m in modalities})
        self.gates = nn.ModuleDict({m: nn.Linear(embed_dim, 1) for m in modalities})

    def config(self) -> dict:
        return {"temperature": self.temperature}

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        names = list(embeddings)
        mask = torch.stack([present[n] for n in names], dim=1)  # [B, M]
        logits = torch.cat([self.gates[n](embeddings[n]) for n in names], dim=1) / self.temperature
        weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
        projected = torch.stack([self.projections[n](embeddings[n]) for n in names], dim=1)
        return (torch.where(mask.unsqueeze(2), projected, 0.0) * weights.unsqueeze(2)).sum(dim=1)


class CodeL2(LossTerm):
    """`weight * mean_b ||h_b||^2`: an L2 penalty on the code."""

    def __init__(self, weight: float = 1e-3):
        self.weight = weight

    def __call__(self, step: Step) -> TermValue:
        l2 = step.output.code.pow(2).sum(dim=1).mean()
        return TermValue(self.weight * l2, {"l2": l2})
'''

QUIET = ["experiment=tiny", "logger=none", "progress_bar=none", "trainer.enable_model_summary=false"]
USER = [f"modality.vector._target_={PACKAGE}.components.BottleneckVector",
        "+modality.vector.bottleneck=5",  # not the class's default: config() must keep it
        "modality.vector.dim=12", "modality.vector.hidden=[16]",
        "modality.image.size=16", "modality.image.hidden_channels=[8]",
        f"fusion._target_={PACKAGE}.components.GatedFusion", "+fusion.temperature=0.5",
        f"+objective.terms.l2._target_={PACKAGE}.components.CodeL2", "+objective.terms.l2.weight=0.01"]


def _compose(run_dir, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={run_dir}", *QUIET, *USER, *overrides])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The user's package, written into a temporary directory put on `sys.path`."""
    root = tmp_path_factory.mktemp("user_code")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text("")
    (root / PACKAGE / "components.py").write_text(textwrap.dedent(COMPONENTS))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        yield importlib.import_module(f"{PACKAGE}.components")
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def run(lab, tmp_path_factory):
    """One epoch, then resumed from `last` to two: `(run_dir, first report, final report,
    last.ckpt after the first part, the final run's objects)`."""
    run_dir = tmp_path_factory.mktemp("user_run")
    torch.manual_seed(0)
    first, _ = train(_compose(run_dir, "trainer.max_epochs=1"))
    after_one = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    final, objects = train(_compose(run_dir, "trainer.max_epochs=2", "ckpt_path=last"))
    return run_dir, first, final, after_one, objects


def test_training_builds_the_user_classes_and_runs_the_user_term(run, lab):
    _, _, report, _, objects = run
    model = objects["module"].model
    assert type(model.modalities["vector"]) is lab.BottleneckVector
    assert model.modalities["vector"].bottleneck == 5
    assert type(model.encoder.fusion) is lab.GatedFusion and model.encoder.fusion.temperature == 0.5
    assert isinstance(objects["module"].objective.terms["l2"], lab.CodeL2)
    metrics = report["metrics"]
    assert metrics["val/loss/l2"] > 0  # the term ran at validation, under its config name
    assert metrics["val/loss"] == pytest.approx(metrics["val/loss/reconstruction"] + metrics["val/loss/l2"])


def test_resuming_continues_the_run(run):
    run_dir, first, final, after_one, _ = run
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["epochs"], final["epochs"]) == (1, 2)
    assert (after_one["epoch"], last["epoch"]) == (0, 1)
    steps = after_one["global_step"]  # 256 training samples in batches of 32
    assert (steps, last["global_step"]) == (8, 16)


def test_the_export_names_user_classes_by_import_path_and_mmae_ones_by_name(run):
    run_dir, *_ = run
    config = json.loads((run_dir / "encoder" / "config.json").read_text())
    assert config["modalities"]["vector"]["class"] == f"{PACKAGE}.components:BottleneckVector"
    assert config["modalities"]["vector"]["config"]["bottleneck"] == 5
    assert config["modalities"]["image"]["class"] == "image"
    assert config["fusion"] == {"class": f"{PACKAGE}.components:GatedFusion", "config": {"temperature": 0.5}}


def test_the_export_loads_only_with_trust_code_and_gives_the_trained_codes(run):
    run_dir, _, _, _, objects = run
    with pytest.raises(mmae.ArtifactError, match=r"trust_code=True") as refused:
        mmae.load_encoder(run_dir / "encoder")
    assert f"'{PACKAGE}.components:BottleneckVector'" in str(refused.value)

    loaded = mmae.load_encoder(run_dir / "encoder", trust_code=True)
    assert type(loaded.modalities["vector"]).__name__ == "BottleneckVector"
    model = objects["module"].model.eval()
    batch = next(iter(objects["datamodule"].val_dataloader()))
    raw, present = split_batch(batch, ["image", "vector"])
    assert not bool(present["vector"].all())  # the batch has missing vectors, masked by the fusion
    with torch.no_grad():
        features, present, encoded_raw = features_of(model.encoder, batch)
        expected = model.encoder(features, present, raw=encoded_raw).code
        torch.testing.assert_close(loaded(raw, present), expected, atol=1e-6, rtol=0)
        only_vector = model.encoder({"vector": features["vector"]}).code
        torch.testing.assert_close(loaded({"vector": raw["vector"]}), only_vector, atol=1e-6, rtol=0)


def test_the_checkpoint_loads_only_with_trust_code(run, lab):
    run_dir, _, final, _, objects = run
    best = run_dir / "checkpoints" / "best.ckpt"
    assert final["best_checkpoint"] == str(best)
    with pytest.raises(mmae.ArtifactError, match=r"trust_code=True"):
        mmae.load_checkpoint_model(best)
    model = mmae.load_checkpoint_model(best, trust_code=True)
    assert type(model.modalities["vector"]) is lab.BottleneckVector
    assert type(model.encoder.fusion) is lab.GatedFusion
    trained = objects["module"].model.state_dict()
    assert model.state_dict().keys() == trained.keys()
    for name, weight in model.state_dict().items():
        assert torch.equal(weight, trained[name]), name


def test_a_class_defined_in_a_function_is_refused_when_described(tmp_path):
    class LocalFusion(MeanFusion):
        pass

    class LocalVector(VectorModality):
        pass

    for modalities, fusion, kind, name in [
        ({"vector": VectorModality(dim=3)}, LocalFusion, "fusion", "LocalFusion"),
        ({"vector": LocalVector(dim=3), "image": ImageModality(size=8, hidden_channels=[4])}, MeanFusion,
         "modality", "LocalVector"),
    ]:
        model = mmae.MultimodalAutoencoder(modalities, fusion, latent_dim=2, embed_dim=8)
        message = (rf"{kind} class .*{name} \(module {re.escape(__name__)}\) cannot be saved: define it "
                   "at the top level of an importable module")
        with pytest.raises(ConfigError, match=message):
            describe(model)
        with pytest.raises(ConfigError, match=message):
            export_encoder(model, tmp_path / "encoder")
        assert not (tmp_path / "encoder").exists()  # nothing half-written


def test_a_user_fusion_is_a_fusion(lab):
    """The user's fusion keeps the fusion contract: a modality missing for a sample, or for the
    whole batch, does not change the codes of the others."""
    fusion = lab.GatedFusion(["a", "b"], embed_dim=4, latent_dim=3)
    assert isinstance(fusion, Fusion)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    present = {"a": torch.tensor([True, True, False, True, True]), "b": torch.ones(5, dtype=torch.bool)}
    both = fusion({"a": a, "b": b}, present)
    noisy = fusion({"a": torch.where(present["a"].unsqueeze(1), a, 1e6), "b": b}, present)
    torch.testing.assert_close(noisy, both)
    only_b = fusion({"b": b}, {"b": present["b"]})
    torch.testing.assert_close(both[2], only_b[2])
