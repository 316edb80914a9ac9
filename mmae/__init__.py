"""mmae: multimodal representation learning with autoencoders.

The top-level namespace stays light (no Lightning, Hydra or W&B import) so that a trained
encoder can be used from code that has none of the training stack.
"""

from mmae.artifacts.export import load_checkpoint_model, load_encoder
from mmae.artifacts.hub import push_to_hub
from mmae.core.errors import ArtifactError, ConfigError, DataError, InputError, MMAEError
from mmae.core.model import AutoencoderOutput, JointDecoder, MultimodalAutoencoder, MultimodalEncoder
from mmae.evaluation.applications import denoise, fit_sampler, generate, impute
from mmae.version import __version__

__all__ = [
    "ArtifactError",
    "AutoencoderOutput",
    "ConfigError",
    "DataError",
    "InputError",
    "JointDecoder",
    "MMAEError",
    "MultimodalAutoencoder",
    "MultimodalEncoder",
    "__version__",
    "denoise",
    "fit_sampler",
    "generate",
    "impute",
    "load_checkpoint_model",
    "load_encoder",
    "push_to_hub",
]
