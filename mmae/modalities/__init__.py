"""One module per modality: its encoder, its decoder head and its reconstruction loss."""

from mmae.modalities.base import Modality
from mmae.modalities.image import ImageModality
from mmae.modalities.vector import VectorModality

__all__ = ["ImageModality", "Modality", "VectorModality"]
