"""Datasets and the datamodule. A batch is `{modality: Tensor[B, ...], "present": {modality:
BoolTensor[B]}, "label": ..., "index": ...}`; missing modalities are zero-filled."""

from mmae.data.batch import split_batch
from mmae.data.synthetic import SyntheticMultimodal

__all__ = ["SyntheticMultimodal", "split_batch"]
