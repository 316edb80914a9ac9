"""A linear undercomplete autoencoder trained with squared error spans the principal subspace
(Baldi & Hornik, 1989): built from mmae's own parts (linear encoder, mean fusion, no decoder
trunk, a linear head) and trained with its reconstruction objective."""

import pytest
import torch

from mmae import MultimodalAutoencoder
from mmae.core.fusion import MeanFusion
from mmae.core.objectives import Objective, ReconstructionLoss, Step
from mmae.modalities import VectorModality


def _principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angles (radians) between the column spaces of `a` and `b`."""
    qa, qb = torch.linalg.qr(a)[0], torch.linalg.qr(b)[0]
    return torch.arccos(torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0))


@pytest.mark.slow
def test_a_linear_autoencoder_spans_the_pca_subspace():
    g = torch.Generator().manual_seed(0)
    mixing = torch.linalg.qr(torch.randn(6, 6, generator=g))[0][:, :2]  # a random 2-D plane in 6-D
    factors = torch.randn(512, 2, generator=g) * torch.tensor([3.0, 2.0])
    x = (factors @ mixing.T + 0.3 * torch.randn(512, 6, generator=g)).double()
    x = x + torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0], dtype=torch.float64)  # an offset to learn

    model = MultimodalAutoencoder({"vector": VectorModality(dim=6, hidden=[], normalize=False)},
                                  MeanFusion, latent_dim=2, embed_dim=4, decoder_hidden=0).double()
    assert all(isinstance(m, torch.nn.Linear) or not list(m.parameters(recurse=False))
               for m in model.modules())  # linear throughout
    objective = Objective({"reconstruction": ReconstructionLoss()})
    present = {"vector": torch.ones(512, dtype=torch.bool)}
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(1500):
        optimizer.zero_grad()
        inputs = {"vector": x}
        objective(Step(model.modalities, model(inputs, present), inputs, present)).total.backward()
        optimizer.step()

    centred = x - x.mean(0)
    principal = torch.linalg.eigh(centred.T @ centred)[1][:, -2:]  # the top two directions
    decoder_columns = model.decoder.heads["vector"][0].weight.detach()  # [6, 2]
    angles = _principal_angles(decoder_columns, principal)
    assert angles.max() < 0.05, angles  # 7e-7 measured
    # Not any plane will do: a random one is far from the principal plane.
    assert _principal_angles(torch.randn(6, 2, generator=g).double(), principal).max() > 0.3
