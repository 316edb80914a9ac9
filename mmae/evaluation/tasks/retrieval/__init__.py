"""task=retrieval: nearest neighbours within and across modalities, and semantic hashing."""

from mmae.evaluation.tasks.retrieval.task import Retrieval

__all__ = ["Retrieval"]
