"""The alignment term (InfoNCE between each modality's own code) and the unimodal codes it reads."""

import math

import pytest
import torch

from mmae.core.errors import ConfigError, InputError
from mmae.core.fusion import ConcatFusion, MeanFusion
from mmae.core.model import AutoencoderOutput, MultimodalAutoencoder
from mmae.core.objectives import Alignment, Objective, ReconstructionLoss, Step, info_nce
from mmae.core.registry import FUSIONS
from mmae.modalities import VectorModality


def _cosine(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _hand_info_nce(a: list[list[float]], b: list[list[float]], temperature: float) -> float:
    """Both directions' cross-entropy of softmax(cos / temperature), written out in floats."""
    def direction(x, y):
        total = 0.0
        for i, row in enumerate(x):
            scores = [_cosine(row, other) / temperature for other in y]
            total += -scores[i] + math.log(sum(math.exp(s) for s in scores))
        return total / len(x)

    return (direction(a, b) + direction(b, a)) / 2


def test_info_nce_matches_a_hand_computation_on_a_tiny_batch():
    a = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    b = [[2.0, 0.1], [0.1, 1.0], [-1.0, 0.9]]
    loss, matched = info_nce(torch.tensor(a), torch.tensor(b), temperature=0.5)
    assert loss.item() == pytest.approx(_hand_info_nce(a, b, 0.5), rel=1e-6)
    # Rows 0 and 1 find their partner first; row 2's nearest b is b[1] (cos 0.74 > 0.08), and
    # column 2's nearest a is a[1]: 2 of 3 in each direction.
    assert matched.item() == pytest.approx(2 / 3)


def test_info_nce_gradient_pulls_partners_together_and_pushes_others_apart():
    a = torch.tensor([[1.0, 0.2], [0.3, 1.0], [-0.5, 0.6]], requires_grad=True)
    b = torch.tensor([[0.8, -0.4], [0.1, 1.0], [-1.0, 0.1]])
    before = torch.nn.functional.cosine_similarity(a, b).detach()
    loss, _ = info_nce(a, b, temperature=0.2)
    loss.backward()
    # A small step down the gradient raises every partner's cosine: the term is minimised by
    # aligning a sample's codes across modalities.
    after = torch.nn.functional.cosine_similarity(a - 0.05 * a.grad, b)
    assert (after > before).all()
    # Scaling a code does not change the loss (cosine), so the gradient is orthogonal to it.
    assert torch.allclose((a.grad * a).sum(dim=1), torch.zeros(3), atol=1e-6)


def _output(codes: dict, present: dict) -> AutoencoderOutput:
    first = next(iter(codes.values()))
    return AutoencoderOutput(first, {}, first, unimodal=codes, unimodal_present=present)


def test_alignment_term_averages_pairs_over_the_samples_that_hold_both():
    torch.manual_seed(0)
    codes = {name: torch.randn(6, 3) for name in ("a", "b", "c")}
    present = {"a": torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool),
               "b": torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.bool),
               "c": torch.tensor([1, 1, 0, 0, 0, 1], dtype=torch.bool)}
    term = Alignment(weight=2.0, temperature=0.3, min_samples=3)
    result = term(Step({}, _output(codes, present), {}, {}))
    ab = present["a"] & present["b"]  # 4 samples; a&c holds 2 (< min_samples: left out); b&c 3
    bc = present["b"] & present["c"]
    expected = (info_nce(codes["a"][ab], codes["b"][ab], 0.3)[0]
                + info_nce(codes["b"][bc], codes["c"][bc], 0.3)[0]) / 2
    assert result.parts["infonce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.value.item() == pytest.approx(2.0 * expected.item(), rel=1e-6)


def test_alignment_without_enough_pairs_is_a_zero_on_the_graph():
    code = torch.randn(3, 2, requires_grad=True)
    present = {"a": torch.tensor([True, False, True]), "b": torch.tensor([False, True, False])}
    output = AutoencoderOutput(code, {}, code, unimodal={"a": code, "b": code}, unimodal_present=present)
    result = Alignment()(Step({}, output, {}, {}))
    assert result.value.item() == 0.0
    result.value.backward()  # every DDP rank must be able to run backward
    assert torch.equal(code.grad, torch.zeros(3, 2))


def test_alignment_options_are_validated_and_need_two_modalities():
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        Alignment(temperature=0.0)
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        Alignment(weight=-1.0)
    with pytest.raises(ConfigError, match="min_samples must be >= 2"):
        Alignment(min_samples=1)
    single = MultimodalAutoencoder({"a": VectorModality(dim=3)}, MeanFusion, latent_dim=2, embed_dim=4)
    with pytest.raises(ConfigError, match=r"only \['a'\]: remove objective.terms.alignment"):
        Objective({"reconstruction": ReconstructionLoss(), "alignment": Alignment()}).check(single)


def _pair_model(fusion, variational=False, private_dim=0) -> MultimodalAutoencoder:
    torch.manual_seed(1)
    modalities = {"a": VectorModality(dim=5, hidden=[8]), "b": VectorModality(dim=3, hidden=[8])}
    return MultimodalAutoencoder(modalities, fusion, latent_dim=4, embed_dim=8, decoder_hidden=8,
                                 variational=variational, private_dim=private_dim).eval()


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_unimodal_codes_are_each_modality_encoded_alone_and_leave_the_fused_code_unchanged(fusion):
    model = _pair_model(FUSIONS[fusion], variational=FUSIONS[fusion].variational, private_dim=2)
    inputs = {"a": torch.randn(4, 5), "b": torch.randn(4, 3)}
    # Modality dropout hid b from samples 0 and 1; the clean batch holds b everywhere but sample 3.
    seen = {"a": torch.tensor([True, True, True, False]), "b": torch.tensor([False, False, True, True])}
    clean = {"a": torch.tensor([True, True, True, False]), "b": torch.tensor([True, True, True, False])}
    clean["b"] = torch.tensor([True, True, True, True])
    with torch.no_grad():
        plain = model.encoder(inputs, seen)
        asked = model.encoder(inputs, seen, unimodal_present=clean)
        torch.testing.assert_close(asked.code, plain.code, rtol=0, atol=0)
        for name in ("a", "b"):
            torch.testing.assert_close(asked.private[name], plain.private[name], rtol=0, atol=0)
        for name, mask in clean.items():
            alone = model.encoder({name: inputs[name][mask]}).code
            torch.testing.assert_close(asked.unimodal[name][mask], alone, rtol=1e-5, atol=1e-6)
            assert torch.equal(asked.unimodal[name][~mask], torch.zeros_like(asked.unimodal[name][~mask]))
            assert torch.equal(asked.unimodal_present[name], mask | seen[name])
    assert model.encoder(inputs, seen).unimodal == {}  # only computed when asked for


def test_unimodal_present_is_checked():
    model = _pair_model(ConcatFusion)
    inputs = {"a": torch.randn(2, 5), "b": torch.randn(2, 3)}
    with pytest.raises(InputError, match=r"unimodal_present\['a'\]: expected a bool tensor of shape \[2\]"):
        model(inputs, unimodal_present={"a": torch.ones(3, dtype=torch.bool)})


MIXING = {name: torch.randn(2, 8, generator=torch.Generator().manual_seed(seed))
          for seed, name in enumerate(("a", "b"))}


def _paired_views(n: int, generator: torch.Generator) -> tuple[dict, torch.Tensor]:
    """Two 8-d views whose only shared content is a 2-d factor; most of each view's variance
    is its own 2-d nuisance (3x the scale, on the first two elements): what reconstruction
    spends a 2-unit code on."""
    shared = torch.randn(n, 2, generator=generator)
    views = {}
    for name in ("a", "b"):
        nuisance = torch.zeros(n, 8)
        nuisance[:, :2] = 3.0 * torch.randn(n, 2, generator=generator)
        views[name] = shared @ MIXING[name] + nuisance + 0.1 * torch.randn(n, 8, generator=generator)
    return views, shared


def _shared_factor_r2(objective: Objective, steps: int = 300) -> float:
    """Train a 2-unit code on the paired views; R^2 of the shared factor from view a's code alone
    (a linear fit on held-out samples)."""
    generator = torch.Generator().manual_seed(0)
    train, _ = _paired_views(512, generator)
    test, factor = _paired_views(512, generator)
    torch.manual_seed(0)
    modalities = {"a": VectorModality(dim=8, hidden=[32]), "b": VectorModality(dim=8, hidden=[32])}
    model = MultimodalAutoencoder(modalities, MeanFusion, latent_dim=2, embed_dim=16, decoder_hidden=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    present = {name: torch.ones(512, dtype=torch.bool) for name in modalities}
    for _ in range(steps):
        output = model(train, present, unimodal_present=present)
        loss = objective(Step(modalities, output, train, present)).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        code = model.encoder({"a": test["a"]}).code
    design = torch.cat([code, torch.ones(len(code), 1)], dim=1)
    fitted = design @ torch.linalg.lstsq(design, factor).solution
    return float(1 - (factor - fitted).pow(2).sum() / (factor - factor.mean(0)).pow(2).sum())


@pytest.mark.slow
def test_alignment_puts_the_shared_factor_into_the_code_where_reconstruction_does_not():
    plain = _shared_factor_r2(Objective({"reconstruction": ReconstructionLoss()}))
    aligned = _shared_factor_r2(Objective({"reconstruction": ReconstructionLoss(),
                                           "alignment": Alignment(weight=1.0)}))
    assert aligned > plain + 0.25, (plain, aligned)  # measured: 0.35 against 0.73
    assert aligned > 0.6, aligned


def test_objective_aligned_config_trains(compose_cfg, tmp_path):
    from mmae.cli.train import train

    cfg = compose_cfg("experiment=tiny", "logger=none", "progress_bar=none", "objective=aligned")
    report, _ = train(cfg)
    # Validation scores the term too (no dropout there: every held pair counts).
    assert 0.0 < report["metrics"]["val/loss/alignment"] < math.log(cfg.data.batch_size) + 1.0
    assert (tmp_path / "encoder" / "model.safetensors").exists()
