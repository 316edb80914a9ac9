"""ONNX graphs of exported encoders: positional inputs (raw modalities, then presence masks),
dynamic batch, checked against PyTorch with onnxruntime when it is installed."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from mmae.artifacts.export import FrozenEncoder
from mmae.core.errors import ConfigError


class _PositionalEncoder(nn.Module):
    """The encoder with positional tensors (raw inputs, then presence masks), as ONNX needs."""

    def __init__(self, encoder: FrozenEncoder):
        super().__init__()
        self.encoder = encoder
        self.names = list(encoder.modalities)

    def forward(self, *tensors: Tensor) -> Tensor:
        n = len(self.names)
        return self.encoder(dict(zip(self.names, tensors[:n], strict=True)),
                            dict(zip(self.names, tensors[n:], strict=True)))


def _example_inputs(encoder: FrozenEncoder, batch: int, generator: torch.Generator) -> list[Tensor]:
    """Distinct random raw inputs for each modality, then masks with every sample covered."""
    raw = [modality.example_input(batch, generator) for modality in encoder.modalities.values()]
    masks = torch.rand(batch, len(raw), generator=generator) < 0.6
    masks[torch.arange(batch), torch.randint(len(raw), (batch,), generator=generator)] = True
    return raw + [masks[:, i].clone() for i in range(len(raw))]


def export_onnx(encoder: FrozenEncoder, path: str | Path) -> float | None:
    """Write `encoder` as an ONNX graph (`torch.onnx.export(dynamo=True)`, dynamic batch) whose
    inputs are the raw modalities then one presence mask each, in `encoder.modalities` order.
    Its output is what `encoder` returns: `code` (the shared code), or `features` (the shared
    then the private codes, `encoder.feature_names()`) for an encoder loaded with `private=True`.

    Returns the largest difference to PyTorch on a fresh random batch with missing modalities
    (None when onnxruntime is not installed to check it).
    """
    try:
        import onnxscript  # noqa: F401 - torch.onnx's dynamo exporter needs it
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra: pip install 'mmae[onnx]'") from None
    path = Path(path)
    wrapper = _PositionalEncoder(encoder).eval()
    names = [*wrapper.names, *(f"present_{n}" for n in wrapper.names)]
    batch = torch.export.Dim("batch", min=1)
    generator = torch.Generator().manual_seed(0)
    examples = _example_inputs(encoder, 2, generator)
    output_name = "features" if encoder.private else "code"
    try:
        torch.onnx.export(wrapper, tuple(examples), path, dynamo=True, input_names=names,
                          output_names=[output_name], dynamic_shapes=(tuple({0: batch} for _ in examples),))
    except Exception as error:  # torch.export and the ONNX translation raise many kinds
        backbones = {n: type(e.backbone).__name__ for n, e in encoder.encoder.encoders.items()
                     if hasattr(e, "backbone")}
        raise ConfigError(
            f"ONNX export could not trace this encoder{f' (backbones: {backbones})' if backbones else ''}: "
            f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}. "
            "The safetensors export is complete and loads with mmae.load_encoder; ONNX is optional"
        ) from error
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path))
    inputs = _example_inputs(encoder, 5, generator)
    (output,) = session.run(None, {name: x.numpy() for name, x in zip(names, inputs, strict=True)})
    return float((torch.from_numpy(output) - wrapper(*inputs)).abs().max())
