"""Every autoencoder variant trains through the main job and beats the mean baseline."""

import pytest

from mmae.cli.train import train
from mmae.config.variants import VARIANTS
from mmae.core.errors import ConfigError

QUIET = ["experiment=small", "logger=none", "progress_bar=none",
         "trainer.enable_model_summary=false"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", list(VARIANTS.values()), ids=list(VARIANTS))
def test_variant_beats_the_mean_baseline_at_leave_one_out(compose_cfg, overrides):
    report, objects = train(compose_cfg(*overrides, *QUIET))
    for name, row in report["imputation"].items():
        assert row["from_others"] < row["baseline_mean"], (name, row)
    logged = report["metrics"]
    # Every term of the objective is reported by name.
    for term in objects["module"].objective.terms:
        if not objects["module"].objective.terms[term].needs_input_grad:
            assert f"val/loss/{term}" in logged, term


def test_overcomplete_and_incompatible_choices_fail_or_compose(compose_cfg):
    cfg = compose_cfg("experiment=overcomplete")
    assert cfg.model.latent_dim > cfg.modality.vector.dim
    assert set(cfg.objective.terms) == {"reconstruction", "l1"}
    assert cfg.corruption.noise._target_.endswith("GaussianNoise")


@pytest.mark.parametrize("overrides, message", [
    (["fusion=poe"], "fusion PoEFusion is variational: it needs model=vae"),
    (["objective=sparse_kl", "objective.terms.kl_sparsity.rho=1.5"], r"rho must be in \(0, 1\), got 1.5"),
    (["objective=sparse_kl", "model.latent_activation=tanh"], r"set model\.latent_activation=sigmoid"),
    (["model=vae", "objective=sparse_kl"], "model=vae has a Gaussian code"),
    (["objective=contractive", "objective.terms.contractive.method=hutch"], "method must be one of"),
    (["+objective.terms.kl._target_=mmae.core.objectives.KLDivergence"], "needs a variational model"),
])
def test_incompatible_choices_fail_before_training(compose_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_cfg(*overrides, *QUIET))
    assert not (tmp_path / "checkpoints").exists()
