"""Datasets and their batches. Every dataset yields `make_sample` items and every loader
collates them into a `Batch` (`inputs` and `present` by modality, `labels`, `index`, `extras`);
missing modalities are zero-filled."""

from mmae.data.batch import Batch, make_sample, split_batch
from mmae.data.synthetic import SyntheticMultimodal

__all__ = ["Batch", "SyntheticMultimodal", "make_sample", "split_batch"]
