"""One module per modality: its loader, preprocessing, encoder, decoder head, likelihood and
the views the synthetic data, media and exports need of it.

Every module of this package is imported here, so a modality added as a new file registers
itself (`@MODALITIES.register("name")`) with nothing else to edit; the names below are the
public ones of mmae's own modalities.
"""

import importlib
import pkgutil

from mmae.core.modality import Modality
from mmae.modalities.audio import AudioModality
from mmae.modalities.image import ImageModality
from mmae.modalities.tabular import TabularModality
from mmae.modalities.text import TextModality
from mmae.modalities.vector import VectorModality

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AudioModality", "ImageModality", "Modality", "TabularModality", "TextModality", "VectorModality"]
