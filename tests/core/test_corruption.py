import pytest
import torch

from mmae.core.corruption import (
    Compose,
    GaussianNoise,
    MaskingNoise,
    ModalityDropout,
    NoCorruption,
    SaltAndPepper,
)
from mmae.core.errors import ConfigError


def _present(n: int, *columns: list[bool]) -> dict[str, torch.Tensor]:
    return {f"m{i}": torch.tensor(c * n) for i, c in enumerate(columns)}


def _inputs(present):
    return {name: torch.randn(len(mask), 3) for name, mask in present.items()}


def test_never_drops_every_modality_and_only_drops_present_ones():
    present = _present(2000, [True, True, False, True], [True, False, True, True],
                       [False, True, True, True])
    _, kept = ModalityDropout(p=0.9)(_inputs(present), present)
    kept_matrix = torch.stack(list(kept.values()), dim=1)
    present_matrix = torch.stack(list(present.values()), dim=1)
    assert kept_matrix.any(dim=1).all()
    assert not (kept_matrix & ~present_matrix).any()


def test_p_one_keeps_exactly_one_present_modality():
    present = _present(500, [True, True], [True, False], [True, True])
    _, kept = ModalityDropout(p=1.0)(_inputs(present), present)
    assert torch.stack(list(kept.values()), dim=1).sum(dim=1).eq(1).all()
    # The one kept is chosen uniformly among the present ones.
    both = present["m0"] & present["m2"]
    share = kept["m0"][both].float().mean().item()
    assert 0.42 < share < 0.58


def test_a_sole_modality_is_never_dropped():
    present = _present(1000, [True], [False])
    _, kept = ModalityDropout(p=0.99)(_inputs(present), present)
    assert kept["m0"].all() and not kept["m1"].any()


def test_drop_rate_matches_closed_form():
    # With two present modalities, m is dropped when drawn (p) unless both were drawn and m
    # was the one rescued (p^2 / 2): P(drop) = p - p^2 / 2.
    p = 0.3
    present = _present(200_000, [True], [True])
    _, kept = ModalityDropout(p=p)(_inputs(present), present)
    dropped = 1 - kept["m0"].float().mean().item()
    assert dropped == pytest.approx(p - p * p / 2, abs=0.005)


def test_p_zero_and_no_corruption_change_nothing():
    present = _present(10, [True, False], [True, True])
    inputs = _inputs(present)
    for corruption in (ModalityDropout(p=0.0), NoCorruption()):
        seen, kept = corruption(inputs, present)
        assert all(torch.equal(kept[n], present[n]) for n in present)
        assert all(seen[n] is inputs[n] for n in inputs)


def test_seeded_generator_makes_dropout_reproducible():
    present = _present(64, [True], [True], [True])
    draws = [ModalityDropout(0.5)(_inputs(present), present, torch.Generator().manual_seed(3))[1]
             for _ in range(2)]
    assert all(torch.equal(draws[0][n], draws[1][n]) for n in present)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_invalid_probability_is_rejected(p):
    with pytest.raises(ConfigError, match=r"p must be in \[0, 1\], got"):
        ModalityDropout(p=p)


def _clean(n: int = 20_000):
    inputs = {"image": torch.rand(n, 1, 4, 4), "vector": torch.rand(n, 3)}
    present = {name: torch.ones(n, dtype=torch.bool) for name in inputs}
    return inputs, present


def test_gaussian_noise_has_the_configured_sigma_and_respects_the_modality_list():
    inputs, present = _clean()
    noisy, kept = GaussianNoise(sigma=0.2, modalities=["image"])(inputs, present)
    assert (noisy["image"] - inputs["image"]).std().item() == pytest.approx(0.2, rel=0.02)
    assert noisy["vector"] is inputs["vector"]
    assert all(torch.equal(kept[n], present[n]) for n in present)


def test_masking_noise_zeroes_the_configured_fraction():
    inputs, present = _clean()
    noisy, _ = MaskingNoise(fraction=0.25)(inputs, present)
    zeroed = (noisy["vector"] == 0) & (inputs["vector"] != 0)
    assert zeroed.float().mean().item() == pytest.approx(0.25, abs=0.01)
    untouched = noisy["vector"] != 0
    assert torch.equal(noisy["vector"][untouched], inputs["vector"][untouched])


def test_salt_and_pepper_sets_the_fraction_to_each_samples_extremes():
    inputs, present = _clean()
    noisy, _ = SaltAndPepper(fraction=0.1)(inputs, present)
    x, y = inputs["image"].flatten(1), noisy["image"].flatten(1)
    changed = x != y
    assert changed.float().mean().item() == pytest.approx(0.1, abs=0.01)  # minus rare no-op hits
    low, high = x.amin(1, keepdim=True).expand_as(x), x.amax(1, keepdim=True).expand_as(x)
    assert ((y[changed] == low[changed]) | (y[changed] == high[changed])).all()
    fixed, _ = SaltAndPepper(fraction=1.0, low=-1.0, high=2.0)(inputs, present)
    assert set(fixed["vector"].unique().tolist()) == {-1.0, 2.0}


def test_compose_applies_dropout_then_noise():
    inputs, present = _clean(1000)
    noisy, kept = Compose(dropout=ModalityDropout(p=1.0), noise=GaussianNoise(sigma=0.5))(inputs, present)
    assert torch.stack(list(kept.values()), 1).sum(1).eq(1).all()
    assert not torch.equal(noisy["image"], inputs["image"])


@pytest.mark.parametrize("make, message", [
    (lambda: GaussianNoise(sigma=-1), "sigma must be >= 0"),
    (lambda: MaskingNoise(fraction=2), r"fraction must be in \[0, 1\]"),
    (lambda: SaltAndPepper(fraction=0.1, low=1, high=0), r"low \(1\) must not exceed high \(0\)"),
    (lambda: Compose(), "at least one corruption"),
])
def test_bad_corruption_settings_are_rejected(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_noise_leaves_the_category_indices_of_a_table_alone():
    from mmae.modalities import TabularModality

    table = TabularModality(numeric=["a", "b"], categorical=["c"], categories={"c": ["x", "y", "z"]},
                            mean=[0.0, 0.0], std=[1.0, 1.0])
    features = torch.tensor([[0.5, -0.5, 2.0]] * 500)
    present = {"table": torch.ones(500, dtype=torch.bool)}
    for noise in (GaussianNoise(sigma=0.5), SaltAndPepper(fraction=1.0), MaskingNoise(fraction=1.0)):
        noisy, _ = noise({"table": features}, present, modalities={"table": table})
        assert torch.equal(noisy["table"][:, 2], features[:, 2])
        assert not torch.equal(noisy["table"][:, :2], features[:, :2])


def test_element_noise_works_in_standardised_units_of_a_fitted_modality():
    from mmae.modalities import VectorModality

    fitted = {"v": VectorModality(dim=4, mean=[10.0, 10.0, -5.0, 0.0], std=[100.0, 100.0, 0.01, 1.0])}
    x = torch.full((2000, 4), 3.0)
    present = {"v": torch.ones(2000, dtype=torch.bool)}
    masked, _ = MaskingNoise(fraction=1.0)({"v": x}, present, modalities=fitted)
    assert torch.allclose(masked["v"], torch.tensor([10.0, 10.0, -5.0, 0.0]).expand(2000, 4))  # the mean
    noisy, _ = GaussianNoise(sigma=0.1)({"v": x}, present, generator=torch.Generator().manual_seed(0),
                                        modalities=fitted)
    spread = (noisy["v"] - x).std(dim=0)
    torch.testing.assert_close(spread, torch.tensor([10.0, 10.0, 0.001, 0.1]), rtol=0.1, atol=0)
