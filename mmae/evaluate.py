"""Evaluation of learned representations: codes of a dataset, linear probes, code sparsity."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from mmae.data.batch import split_batch
from mmae.model import MultimodalAutoencoder


@torch.no_grad()
def encode_batches(model: MultimodalAutoencoder, batches: Iterable[dict],
                   modalities: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """Deterministic codes (posterior means for VAEs) and labels of every batch, in order.

    `modalities` restricts the encoder's input to a subset; samples with none of them present
    are skipped.
    """
    was_training = model.training
    model.eval()
    names = list(modalities or model.modalities)
    codes, labels = [], []
    for batch in batches:
        inputs, present = split_batch(batch, names)
        keep = torch.stack(list(present.values()), dim=1).any(dim=1)
        inputs = {n: x[keep] for n, x in inputs.items()}
        present = {n: p[keep] for n, p in present.items()}
        if keep.any():
            codes.append(model.encoder(inputs, present).code)
            labels.append(batch["label"][keep])
    model.train(was_training)
    return torch.cat(codes), torch.cat(labels)


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                 l2: float = 1e-3, steps: int = 200) -> float:
    """Test accuracy of a multinomial logistic regression fitted on standardised features.

    Full-batch L-BFGS: deterministic, and exact enough that differences between feature sets
    reflect the features rather than the optimiser.
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    linear = torch.nn.Linear(train_x.shape[1], num_classes).double()
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    x, y = train_x.double(), train_y.long()

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = linear(test_x.double()).argmax(dim=1)
    return (predicted == test_y).double().mean().item()


def hoyer_sparsity(codes: Tensor) -> float:
    """Mean Hoyer sparsity of the codes, in [0, 1]: 0 when all units are equally active, 1 when
    one unit carries everything (or none does). Scale-free, so codes of different ranges compare."""
    n = codes.shape[1]
    if n < 2:
        return 0.0
    ratio = codes.abs().sum(1) / codes.norm(dim=1).clamp_min(1e-12)
    return ((n**0.5 - ratio) / (n**0.5 - 1)).clamp(0.0, 1.0).mean().item()
