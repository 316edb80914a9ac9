"""Decoder likelihoods: closed forms against torch.distributions, links, learned scales, shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from mmae.core.errors import ConfigError, InputError
from mmae.core.likelihoods import (
    CB_TAYLOR_RADIUS,
    LIKELIHOODS,
    LOG_SCALE_BOUNDS,
    Bernoulli,
    Categorical,
    ContinuousBernoulli,
    Gaussian,
    Laplace,
    build_likelihood,
    cb_log_normalizer,
)

SHAPE = (2, 3, 4)  # [C, H, W]
MEAN = torch.tensor([0.5, -1.0]).view(2, 1, 1)
STD = torch.tensor([2.0, 0.25]).view(2, 1, 1)


def _location_scale(cls, scale: str):
    lik = cls(MEAN, STD, scale=scale, shape=SHAPE)
    if scale == "modality":
        with torch.no_grad():
            lik.log_scale.fill_(0.3)
    elif scale == "feature":
        with torch.no_grad():
            lik.log_scale.copy_(torch.linspace(-1.0, 1.0, math.prod(SHAPE)).view(SHAPE))
    return lik


def _sigma(lik) -> torch.Tensor:
    log_scale = torch.zeros(()) if lik.log_scale is None else lik.log_scale.detach()
    return STD * log_scale.exp()


# --- closed forms ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["fixed", "modality", "feature"])
def test_gaussian_nll_is_the_normal_log_density(scale):
    lik = _location_scale(Gaussian, scale)
    mu, x = torch.randn(3, *SHAPE), torch.randn(3, *SHAPE) * 3
    expected = -D.Normal(mu, _sigma(lik).expand(SHAPE)).log_prob(x).flatten(1).mean(1)
    torch.testing.assert_close(lik.nll(mu, x), expected)


def test_gaussian_nll_by_hand():
    # x = 3, mu = 1, sigma = 2 * e^0.5: 0.5 * (2 / sigma)^2 + log(sigma) + 0.5 * log(2 pi).
    lik = Gaussian(torch.tensor([0.0]), torch.tensor([2.0]), scale="modality", shape=(1,))
    with torch.no_grad():
        lik.log_scale.fill_(0.5)
    by_hand = 0.5 * (2.0 / (2.0 * math.exp(0.5))) ** 2 + math.log(2.0) + 0.5 + 0.5 * math.log(2 * math.pi)
    assert lik.nll(torch.tensor([[1.0]]), torch.tensor([[3.0]])).item() == pytest.approx(by_hand, rel=1e-6)
    assert by_hand == pytest.approx(2.29603, abs=1e-5)


def test_gaussian_fixed_is_half_standardised_squared_error_plus_constant():
    lik = Gaussian(MEAN, STD, shape=SHAPE)
    assert lik.log_scale is None and not list(lik.parameters())
    mu, x = torch.randn(2, *SHAPE), torch.randn(2, *SHAPE)
    z = (x - mu) / STD
    expected = (0.5 * z**2 + torch.log(STD) + 0.5 * math.log(2 * math.pi)).flatten(1).mean(1)
    torch.testing.assert_close(lik.nll(mu, x), expected)


@pytest.mark.parametrize("scale", ["fixed", "modality", "feature"])
def test_laplace_nll_is_the_laplace_log_density(scale):
    lik = _location_scale(Laplace, scale)
    mu, x = torch.randn(3, *SHAPE), torch.randn(3, *SHAPE) * 3
    expected = -D.Laplace(mu, _sigma(lik).expand(SHAPE)).log_prob(x).flatten(1).mean(1)
    torch.testing.assert_close(lik.nll(mu, x), expected)
    # one element by hand: |3 - 1| / 0.5 + log(2 * 0.5) = 4
    assert Laplace(0.0, 0.5).nll(torch.tensor([[1.0]]), torch.tensor([[3.0]])).item() == pytest.approx(4.0)


def test_log_scale_is_clamped_in_the_forward_computation():
    lik = Gaussian(0.0, 1.0, scale="modality")
    with torch.no_grad():
        lik.log_scale.fill_(-50.0)
    low = LOG_SCALE_BOUNDS[0]
    expected = 0.5 * math.exp(-2 * low) + low + 0.5 * math.log(2 * math.pi)
    assert lik.nll(torch.zeros(1, 1), torch.ones(1, 1)).item() == pytest.approx(expected, rel=1e-5)
    assert lik.scale_value().item() == pytest.approx(math.exp(low))


def test_bernoulli_nll_is_binary_cross_entropy():
    lik = Bernoulli()
    p = torch.rand(4, 3, 5) * 0.98 + 0.01
    x = torch.rand(4, 3, 5)  # grey targets, not only 0/1
    expected = F.binary_cross_entropy(p, x, reduction="none").flatten(1).mean(1)
    torch.testing.assert_close(lik.nll(p, x), expected)
    # -(0.3 log 0.8 + 0.7 log 0.2)
    hand = lik.nll(torch.tensor([[0.8]]), torch.tensor([[0.3]])).item()
    assert hand == pytest.approx(-(0.3 * math.log(0.8) + 0.7 * math.log(0.2)), rel=1e-6)
    assert hand == pytest.approx(1.19355, abs=1e-5)


CB_LAMBDAS = [0.01, 0.2, 0.5, 0.5 + 1e-4, 0.5 - 1e-4, 0.5 + 0.9 * CB_TAYLOR_RADIUS,
              0.5 - 1.1 * CB_TAYLOR_RADIUS, 0.8, 0.99]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_bernoulli_nll_matches_torch(dtype):
    lam = torch.tensor(CB_LAMBDAS, dtype=dtype).repeat_interleave(5).view(-1, 1)
    x = torch.rand(lam.shape[0], 1, dtype=dtype)
    reference = D.ContinuousBernoulli(probs=lam).log_prob(x)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(ContinuousBernoulli().nll(lam, x), -reference.squeeze(1), **tolerance)


def test_continuous_bernoulli_normaliser_at_and_near_one_half():
    lam = torch.tensor([0.5], dtype=torch.float64)
    assert cb_log_normalizer(lam).item() == pytest.approx(math.log(2.0), abs=1e-15)
    # The series agrees with the closed form on both sides of the switch ...
    for d in (0.999 * CB_TAYLOR_RADIUS, 1.001 * CB_TAYLOR_RADIUS, 1e-4, -0.5 * CB_TAYLOR_RADIUS):
        lam = torch.tensor([0.5 + d], dtype=torch.float64)
        u = 1 - 2 * lam
        closed = torch.log(2 * torch.atanh(u) / u)
        assert cb_log_normalizer(lam).item() == pytest.approx(closed.item(), abs=1e-14)


def test_continuous_bernoulli_taylor_coefficients():
    # With the right coefficients up to d^6 the remainder is O(d^8): halving d divides it by 2^8.
    import mmae.core.likelihoods as lk

    def remainder(d: float) -> float:
        lam = torch.tensor([0.5 + d], dtype=torch.float64)
        u = 1 - 2 * lam
        closed = torch.log(2 * torch.atanh(u) / u).item()
        old = lk.CB_TAYLOR_RADIUS
        lk.CB_TAYLOR_RADIUS = 1.0  # force the series
        try:
            series = cb_log_normalizer(lam).item()
        finally:
            lk.CB_TAYLOR_RADIUS = old
        return closed - series

    ratio = remainder(0.1) / remainder(0.05)
    assert 200 < ratio < 300, ratio
    # and C(lam) = 2 atanh(u) / u = 2 + (8/3) d^2 + (32/5) d^4 + (128/7) d^6 + O(d^8)
    d = 1e-2
    c = math.exp(cb_log_normalizer(torch.tensor([0.5 + d], dtype=torch.float64)).item())
    assert c == pytest.approx(2 + 8 / 3 * d**2 + 32 / 5 * d**4 + 128 / 7 * d**6, abs=1e-14)


@pytest.mark.parametrize("lam", [0.01, 0.3, 0.5, 0.5 + 1e-4, 0.9, 0.99])
def test_continuous_bernoulli_density_integrates_to_one(lam):
    x = torch.linspace(0, 1, 20001, dtype=torch.float64).view(-1, 1)
    density = torch.exp(-ContinuousBernoulli().nll(torch.full_like(x, lam), x))
    assert torch.trapezoid(density, x.squeeze(1)).item() == pytest.approx(1.0, abs=1e-6)


def test_continuous_bernoulli_mean():
    lam = torch.tensor([0.01, 0.3, 0.5, 0.5 + 1e-4, 0.5 - 5e-3, 0.7, 0.99], dtype=torch.float64)
    mean = ContinuousBernoulli.mean_of(lam)
    torch.testing.assert_close(mean, D.ContinuousBernoulli(probs=lam).mean, rtol=1e-9, atol=1e-9)
    assert mean[2].item() == 0.5
    # against the integral of x p(x)
    x = torch.linspace(0, 1, 20001, dtype=torch.float64).view(-1, 1)
    density = torch.exp(-ContinuousBernoulli().nll(torch.full_like(x, 0.3), x))
    integral = torch.trapezoid(x.squeeze(1) * density, x.squeeze(1)).item()
    assert mean[1].item() == pytest.approx(integral, abs=1e-6)


def test_categorical_nll_is_cross_entropy():
    logits, tokens = torch.randn(3, 7, 11), torch.randint(0, 11, (3, 7))
    expected = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none").mean(1)
    torch.testing.assert_close(Categorical().nll(logits, tokens), expected)
    flat_logits, labels = torch.randn(5, 4), torch.randint(0, 4, (5,))
    torch.testing.assert_close(Categorical().nll(flat_logits, labels),
                               F.cross_entropy(flat_logits, labels, reduction="none"))


def test_categorical_ignore_index():
    logits, tokens = torch.randn(3, 6, 5), torch.randint(1, 5, (3, 6))
    tokens[0, 3:] = 0
    tokens[2, :] = 0  # every position ignored
    lik = Categorical(ignore_index=0)
    nll = lik.nll(logits, tokens)
    for b in range(2):
        expected = F.cross_entropy(logits[b], tokens[b], ignore_index=0)  # mean over kept positions
        torch.testing.assert_close(nll[b], expected)
    assert nll[2].item() == 0.0
    assert torch.isfinite(nll).all()
    # a pad id that is a valid class is still ignored, the others still count
    assert Categorical().nll(logits, tokens)[0] != nll[0]


# --- links ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Gaussian, Laplace])
def test_location_scale_link_destandardises(cls):
    y = torch.randn(4, *SHAPE)
    out = cls(MEAN, STD, shape=SHAPE).link(y)
    assert out.shape == y.shape
    for c in range(2):
        torch.testing.assert_close(out[:, c], MEAN[c, 0, 0] + STD[c, 0, 0] * y[:, c])


@pytest.mark.parametrize("cls", [Bernoulli, ContinuousBernoulli])
def test_probability_links_lie_in_the_unit_interval(cls):
    # (float32's sigmoid rounds to exactly 1 beyond about 17)
    out = cls().link(torch.linspace(-15, 15, 4 * 24).view(4, *SHAPE))
    assert ((out > 0) & (out < 1)).all()
    torch.testing.assert_close(out.mean(), torch.tensor(0.5))


def test_categorical_link_is_identity():
    logits = torch.randn(2, 3, 4)
    assert torch.equal(Categorical().link(logits), logits)


# --- learned scales -------------------------------------------------------------------------


def test_learned_modality_scale_converges_to_rmse():
    lik = Gaussian(torch.zeros(5), torch.full((5,), 2.0), scale="modality", shape=(5,))
    reconstruction = torch.randn(64, 5)
    target = reconstruction + 0.3 * torch.randn(64, 5)
    optimizer = torch.optim.Adam(lik.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        lik.nll(reconstruction, target).mean().backward()
        optimizer.step()
    rmse = (target - reconstruction).square().mean().sqrt()
    torch.testing.assert_close(lik.scale_value(), rmse.expand(5), rtol=1e-2, atol=0.0)
    assert (math.log(2.0) + lik.log_scale.item()) == pytest.approx(rmse.log().item(), abs=1e-2)


def test_learned_feature_scale_has_one_parameter_per_element():
    lik = Gaussian(MEAN, STD, scale="feature", shape=SHAPE)
    (parameter,) = lik.parameters()
    assert parameter.shape == SHAPE and parameter.numel() == 24
    assert torch.equal(parameter, torch.zeros(SHAPE))
    assert Gaussian(MEAN, STD, scale="modality").log_scale.shape == ()
    # each element converges to its own RMS residual
    residual = torch.randn(256, *SHAPE) * torch.linspace(0.5, 2.0, 24).view(SHAPE)
    optimizer = torch.optim.Adam(lik.parameters(), lr=0.05)
    reconstruction = torch.zeros_like(residual)
    for _ in range(600):
        optimizer.zero_grad()
        lik.nll(reconstruction, residual).mean().backward()
        optimizer.step()
    torch.testing.assert_close(lik.scale_value(), residual.square().mean(0).sqrt(), rtol=2e-2, atol=0.0)


# --- shapes, units, devices -----------------------------------------------------------------

ALL = [
    ("gaussian", lambda: Gaussian(MEAN, STD, shape=SHAPE)),
    ("gaussian_modality", lambda: Gaussian(MEAN, STD, scale="modality", shape=SHAPE)),
    ("gaussian_feature", lambda: Gaussian(MEAN, STD, scale="feature", shape=SHAPE)),
    ("laplace", lambda: Laplace(MEAN, STD, shape=SHAPE)),
    ("bernoulli", Bernoulli),
    ("continuous_bernoulli", ContinuousBernoulli),
]


def _inputs(name: str, batch: int = 3):
    if name in ("bernoulli", "continuous_bernoulli"):
        return torch.rand(batch, *SHAPE) * 0.9 + 0.05, torch.rand(batch, *SHAPE)
    return torch.randn(batch, *SHAPE), torch.randn(batch, *SHAPE)


@pytest.mark.parametrize(("name", "make"), ALL, ids=[n for n, _ in ALL])
def test_nll_is_per_sample_and_per_element(name, make):
    lik = make()
    reconstruction, target = _inputs(name)
    nll = lik.nll(reconstruction, target)
    assert nll.shape == (3,)
    # Repeating every element (same per-element values, twice as many) leaves the nll unchanged.
    if name == "gaussian_feature":
        lik = Gaussian(MEAN, STD, scale="feature", shape=(2, 3, 8))
    doubled = lik.nll(torch.cat([reconstruction] * 2, -1), torch.cat([target] * 2, -1))
    torch.testing.assert_close(doubled, nll)


def test_categorical_nll_is_per_sample_and_per_position():
    logits, tokens = torch.randn(3, 4, 6), torch.randint(0, 6, (3, 4))
    nll = Categorical().nll(logits, tokens)
    assert nll.shape == (3,)
    torch.testing.assert_close(Categorical().nll(logits.repeat(1, 2, 1), tokens.repeat(1, 2)), nll)


@pytest.mark.parametrize(("name", "make"), ALL, ids=[n for n, _ in ALL])
def test_float64_inputs_and_statistics_in_the_state_dict(name, make):
    lik = make()
    reconstruction, target = _inputs(name)
    out = lik.nll(lik.link(reconstruction.double()), target.double())
    assert out.dtype == torch.float64
    if name not in ("bernoulli", "continuous_bernoulli"):
        state = lik.state_dict()
        assert torch.equal(state["mean"], MEAN) and torch.equal(state["std"], STD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "make"), ALL, ids=[n for n, _ in ALL])
def test_on_cuda(name, make):
    lik, reconstruction, target = make(), *_inputs(name)
    on_cpu = lik.nll(lik.link(reconstruction), target)
    lik.cuda()
    on_gpu = lik.nll(lik.link(reconstruction.cuda()), target.cuda())
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu)


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError):
        Gaussian().nll(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(InputError):
        Categorical().nll(torch.zeros(4, 3, 5), torch.zeros(4, 2, dtype=torch.long))


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Bernoulli, ContinuousBernoulli])
def test_gradients_are_finite_when_the_head_saturates(cls):
    output = torch.tensor([[-100.0, -30.0, -1e-3, 0.0, 1e-5, 30.0, 100.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 0.5, 0.5, 1.0, 0.0, 1.0]])
    lik = cls()
    nll = lik.nll(lik.link(output), target)
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(output.grad).all()
    # probabilities exactly 0 and 1 given directly
    p = torch.tensor([[0.0, 1.0, 0.5, 0.5 + 1e-4]], requires_grad=True)
    nll = lik.nll(p, torch.tensor([[1.0, 0.0, 0.2, 0.7]]))
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("cls", [Gaussian, Laplace])
@pytest.mark.parametrize("log_scale", [LOG_SCALE_BOUNDS[0] - 10, 0.0, LOG_SCALE_BOUNDS[1] + 10])
def test_gradients_are_finite_for_large_residuals(cls, log_scale):
    lik = cls(0.0, 1.0, scale="modality")
    with torch.no_grad():
        lik.log_scale.fill_(log_scale)
    output = torch.tensor([[0.0, 1e6, -1e6, 3.0]], requires_grad=True)
    nll = lik.nll(lik.link(output), torch.tensor([[1e6, -1e6, 0.0, 3.0]]))
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(output.grad).all()
    assert torch.isfinite(lik.log_scale.grad).all()


def test_categorical_gradients_are_finite_for_extreme_logits():
    logits = torch.tensor([[[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    nll = Categorical().nll(logits, torch.tensor([[1, 2]]))
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(logits.grad).all()


# --- factory --------------------------------------------------------------------------------


def test_build_likelihood_unknown_name_names_owner_and_choices():
    with pytest.raises(ConfigError) as error:
        build_likelihood("poisson", None, None, (3,), owner="modality 'audio'")
    message = str(error.value)
    assert "modality 'audio'" in message and "poisson" in message
    assert all(name in message for name in LIKELIHOODS)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_build_likelihood_builds_every_choice(name):
    lik = build_likelihood(name, MEAN, STD, SHAPE, owner="image")
    reconstruction, target = _inputs(name)
    assert lik.nll(lik.link(reconstruction), target).shape == (3,)
    expected = {"gaussian": (Gaussian, "fixed"), "gaussian_modality": (Gaussian, "modality"),
                "gaussian_feature": (Gaussian, "feature"), "laplace": (Laplace, "fixed"),
                "bernoulli": (Bernoulli, None), "continuous_bernoulli": (ContinuousBernoulli, None)}[name]
    assert type(lik) is expected[0]
    if expected[1] is not None:
        assert lik.scale == expected[1]
    if name == "gaussian_feature":
        assert lik.log_scale.shape == SHAPE


def test_build_likelihood_defaults_and_ignored_statistics():
    lik = build_likelihood("gaussian", None, None, (4,), owner="vector")
    assert torch.equal(lik.mean, torch.tensor(0.0)) and torch.equal(lik.std, torch.tensor(1.0))
    y = torch.randn(2, 4)
    assert torch.equal(lik.link(y), y)
    for name in ("bernoulli", "continuous_bernoulli"):
        lik = build_likelihood(name, MEAN, STD, SHAPE, owner="image")
        assert not dict(lik.named_buffers()) and not list(lik.parameters())
        y = torch.randn(2, *SHAPE)
        assert torch.equal(lik.link(y), torch.sigmoid(y))


def test_build_likelihood_bad_statistics_name_owner():
    owner = "modality 'audio'"
    with pytest.raises(ConfigError, match=owner):
        build_likelihood("gaussian", torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), (3,), owner=owner)
    with pytest.raises(ConfigError, match=rf"{owner}.*broadcast"):
        build_likelihood("laplace", torch.zeros(2, 1, 1), torch.ones(2, 1, 1), (3, 4, 4), owner=owner)
    with pytest.raises(ConfigError):
        Gaussian(scale="feature")
    with pytest.raises(ConfigError):
        Gaussian(scale="per_pixel")


def test_every_choice_is_described():
    assert set(LIKELIHOODS) == {"gaussian", "gaussian_modality", "gaussian_feature", "laplace", "bernoulli",
                                "continuous_bernoulli"}
    assert all(isinstance(text, str) and text for text in LIKELIHOODS.values())
