"""One module per modality: its loader, preprocessing, encoder, decoder head and loss."""

from mmae.modalities.audio import AudioModality
from mmae.modalities.base import Modality
from mmae.modalities.image import ImageModality
from mmae.modalities.tabular import TabularModality
from mmae.modalities.text import TextModality
from mmae.modalities.vector import VectorModality

#: Modality classes by `kind`: the only classes an exported encoder may name.
MODALITY_KINDS: dict[str, type[Modality]] = {
    cls.kind: cls for cls in (AudioModality, ImageModality, TabularModality, TextModality, VectorModality)}

__all__ = ["MODALITY_KINDS", "AudioModality", "ImageModality", "Modality", "TabularModality", "TextModality",
           "VectorModality"]
