"""The error types mmae raises on purpose.

Every error a user can cause (bad config, bad tensors, bad data) is one of these, so callers
can tell "you gave me something wrong" apart from a bug.
"""


class MMAEError(Exception):
    """Base class of every error mmae raises deliberately."""


class ConfigError(MMAEError, ValueError):
    """A configuration value is invalid or two choices are incompatible."""


class InputError(MMAEError, ValueError):
    """A batch or tensor does not match what the model was built for."""


class DataError(MMAEError, ValueError):
    """A data file or manifest cell is missing, corrupt or does not match its modality.

    The message names the manifest, the row and the column, so the user can find the cell.
    """


class TrainingError(MMAEError, RuntimeError):
    """Training cannot go on, e.g. a loss or a gradient became NaN or infinite.

    The message names the step, the batch and the loss term or parameter concerned.
    """


class ArtifactError(MMAEError):
    """A file mmae wrote (a checkpoint, an export) is truncated, corrupt, or holds something
    other than tensors and primitives and is refused rather than unpickled.

    The message names the file and says what is wrong with it.
    """


class ExportError(ArtifactError):
    """An export directory is missing, corrupt, tampered with, from an incompatible mmae, or
    names code that was not trusted (`trust_code`)."""
