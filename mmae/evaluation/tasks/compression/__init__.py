"""task=compress: rate against distortion of the quantised latent, beside PCA and JPEG."""

from mmae.evaluation.tasks.compression.task import Compress

__all__ = ["Compress"]
