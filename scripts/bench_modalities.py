"""Cost against the number of modalities: one training step (forward, backward, optimizer) with
2, 4 and 8 vector modalities of equal size, for every fusion.

    python scripts/bench_modalities.py
    python scripts/bench_modalities.py --dim 256 --batch-size 256 --steps 50

Target: the step time grows no faster than the number of modalities (the `x per modality`
column stays at or below 1 from 2 to 8); PoE / MoPoE never enumerate the 2^M subsets
(MoPoE draws one subset per sample). Inputs have 30% of modalities missing at random.
"""

from __future__ import annotations

import argparse
import time

import torch

from mmae.core.fusion import (
    AttentionFusion,
    ConcatFusion,
    MeanFusion,
    MoEFusion,
    MoPoEFusion,
    PoEFusion,
)
from mmae.core.model import MultimodalAutoencoder
from mmae.core.objectives import KLDivergence, Objective, ReconstructionLoss, Step
from mmae.modalities import VectorModality

COUNTS = (2, 4, 8)
FUSIONS = {"mean": MeanFusion, "concat": ConcatFusion, "attention": AttentionFusion,
           "poe": PoEFusion, "moe": MoEFusion, "mopoe": MoPoEFusion}


def step_time(fusion: str, count: int, dim: int, batch: int, steps: int, warmup: int) -> float:
    """Median seconds per training step."""
    torch.manual_seed(0)
    names = [f"m{i}" for i in range(count)]
    modalities = {n: VectorModality(dim=dim, hidden=[2 * dim]) for n in names}
    variational = fusion in ("poe", "moe", "mopoe")
    model = MultimodalAutoencoder(modalities, fusion=FUSIONS[fusion], latent_dim=32, embed_dim=128,
                                  decoder_hidden=256, variational=variational)
    terms = {"reconstruction": ReconstructionLoss()}
    if variational:
        terms["kl"] = KLDivergence()
    objective = Objective(terms)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs = {n: torch.randn(batch, dim) for n in names}
    present = {n: torch.rand(batch) > 0.3 for n in names}
    present[names[0]] |= ~torch.stack(list(present.values()), 1).any(1)  # never all missing
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        output = model(inputs, present)
        loss = objective(Step(modalities, output, inputs, present, inputs=inputs, global_step=i)).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    print(f"\n$ python scripts/bench_modalities.py --dim {args.dim} --batch-size {args.batch_size} "
          f"--steps {args.steps}")
    print(f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}; median step time")
    header = "".join(f"{f'M={m} (ms)':>12}" for m in COUNTS)
    print(f"{'fusion':<10}{header}{'8 vs 2':>9}{'x per modality':>16}")
    for fusion in FUSIONS:
        ms = [1000 * step_time(fusion, m, args.dim, args.batch_size, args.steps, args.warmup)
              for m in COUNTS]
        growth = ms[-1] / ms[0]
        per_modality = growth / (COUNTS[-1] / COUNTS[0])
        print(f"{fusion:<10}{''.join(f'{t:>12.2f}' for t in ms)}{growth:>8.2f}x{per_modality:>16.2f}")


if __name__ == "__main__":
    main()
