from itertools import combinations

import pytest
import torch

from mmae.core.errors import ConfigError
from mmae.core.fusion import ConcatFusion, MeanFusion
from mmae.core.registry import FUSIONS as REGISTERED

NAMES = ["a", "b", "c"]
SUBSETS = [set(s) for r in range(1, 4) for s in combinations(NAMES, r)]
#: Every deterministic fusion mmae registers (the expert fusions: tests/core/test_variational.py).
FUSIONS = [REGISTERED[n] for n in REGISTERED if not REGISTERED[n].variational]


def _embeddings(batch: int = 4, dim: int = 6) -> dict[str, torch.Tensor]:
    return {n: torch.randn(batch, dim) for n in NAMES}


@pytest.mark.parametrize("fusion_cls", FUSIONS)
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(sorted(s)))
def test_every_subset_fuses_and_missing_values_do_not_matter(fusion_cls, subset):
    fusion = fusion_cls(NAMES, embed_dim=8, latent_dim=3)  # (attention: 4 heads of 2)
    embeddings = _embeddings(dim=8)
    # The subset given as the only keys ...
    only_subset = fusion({n: embeddings[n] for n in subset},
                         {n: torch.ones(4, dtype=torch.bool) for n in subset})
    # ... equals all keys given with the others masked out and filled with garbage.
    garbage = {n: (e if n in subset else torch.full_like(e, 1e6)) for n, e in embeddings.items()}
    masked = fusion(garbage, {n: torch.full((4,), n in subset) for n in NAMES})
    assert only_subset.shape == (4, 3)
    assert torch.isfinite(only_subset).all()
    torch.testing.assert_close(only_subset, masked)


@pytest.mark.parametrize("fusion_cls", FUSIONS)
def test_per_sample_subsets_match_single_sample_runs(fusion_cls):
    fusion = fusion_cls(NAMES, embed_dim=8, latent_dim=3)
    embeddings = _embeddings(batch=len(SUBSETS), dim=8)
    present = {n: torch.tensor([n in s for s in SUBSETS]) for n in NAMES}
    fused = fusion(embeddings, present)
    for i, subset in enumerate(SUBSETS):
        alone = fusion({n: embeddings[n][i:i + 1] for n in subset},
                       {n: torch.ones(1, dtype=torch.bool) for n in subset})
        torch.testing.assert_close(fused[i:i + 1], alone)


def test_mean_fusion_is_the_masked_mean_of_projections():
    fusion = MeanFusion(NAMES, embed_dim=6, latent_dim=3)
    embeddings = _embeddings(batch=2)
    present = {"a": torch.tensor([True, True]), "b": torch.tensor([True, False]),
               "c": torch.tensor([False, False])}
    fused = fusion(embeddings, present)
    proj = {n: fusion.projections[n](embeddings[n]) for n in NAMES}
    torch.testing.assert_close(fused[0], (proj["a"][0] + proj["b"][0]) / 2)
    torch.testing.assert_close(fused[1], proj["a"][1])


def test_concat_fusion_uses_the_learned_placeholder_for_a_missing_modality():
    fusion = ConcatFusion(NAMES, embed_dim=6, latent_dim=3, hidden_dim=8)
    with torch.no_grad():
        fusion.placeholders["b"].fill_(0.5)
    embeddings = _embeddings(batch=1)
    fused = fusion({"a": embeddings["a"], "c": embeddings["c"]},
                   {"a": torch.tensor([True]), "c": torch.tensor([True])})
    expected = fusion.mlp(torch.cat([embeddings["a"], torch.full((1, 6), 0.5), embeddings["c"]], 1))
    torch.testing.assert_close(fused, expected)


def test_bad_sizes_are_rejected():
    with pytest.raises(ConfigError, match="latent_dim must be positive"):
        MeanFusion(NAMES, embed_dim=6, latent_dim=0)
    with pytest.raises(ConfigError, match="at least one modality"):
        ConcatFusion([], embed_dim=6, latent_dim=3)
