"""Fusions under their public name (`from mmae.fusion import MeanFusion`); they live in
`mmae.core.fusion`."""

from mmae.core.fusion import (
    AttentionFusion,
    ConcatFusion,
    Fusion,
    MeanFusion,
    MoEFusion,
    MoPoEFusion,
    PoEFusion,
)

__all__ = ["AttentionFusion", "ConcatFusion", "Fusion", "MeanFusion", "MoEFusion", "MoPoEFusion", "PoEFusion"]
