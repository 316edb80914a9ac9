"""`mmae-export CHECKPOINT [--output DIR] [--format onnx]`: a training checkpoint -> an encoder export."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmae.artifacts.checkpoint import load_checkpoint_file
from mmae.artifacts.export import export_encoder, load_checkpoint_model, load_encoder
from mmae.artifacts.onnx import export_onnx
from mmae.cli.runner import run_command


def main(argv: list[str] | None = None) -> None:
    """`mmae-export CHECKPOINT [--output DIR]`: a training checkpoint -> an encoder export."""
    parser = argparse.ArgumentParser(prog="mmae-export", description=main.__doc__)
    parser.add_argument("checkpoint", help="a .ckpt written by mmae-train")
    parser.add_argument("--output", help="export directory (default: <run dir>/encoder)")
    parser.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                        help="onnx: also write encoder.onnx, checked against PyTorch")
    parser.add_argument("--reference-pretrained", action="store_true",
                        help="name frozen pretrained backbones instead of storing their weights "
                             "(loading then needs those models locally)")
    parser.add_argument("--trust-code", action="store_true",
                        help="the checkpoint names a modality or fusion class of your own: import it")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    output = Path(args.output) if args.output else checkpoint.resolve().parent.parent / "encoder"
    run_command("mmae-export", lambda: _export(checkpoint, output, args.format, args.trust_code,
                                               args.reference_pretrained))


def _export(checkpoint: Path, output: Path, format: str, trust_code: bool, reference: bool) -> None:
    labels = load_checkpoint_file(checkpoint, mmap=True).get("mmae_labels")  # (absent before mmae 0.4)
    export_encoder(load_checkpoint_model(checkpoint, trust_code=trust_code), output,
                   reference_pretrained=reference, labels=labels)
    print(f"mmae-export: encoder written to {output}")
    if format == "onnx":
        error = export_onnx(load_encoder(output, trust_code=trust_code), output / "encoder.onnx")
        check = ("not checked (install onnxruntime)" if error is None
                 else f"max |ONNX - PyTorch| = {error:.2e} on a random batch")
        print(f"mmae-export: ONNX graph written to {output / 'encoder.onnx'}; parity: {check}")


if __name__ == "__main__":
    main()
