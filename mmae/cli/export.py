"""`mmae-export RUN_OR_CKPT [--output DIR] [--format onnx] [--push-to-hub ORG/NAME]`: a training
run or checkpoint -> an encoder export with its model card, optionally shared on the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmae.artifacts.atomic import write_text_atomic
from mmae.artifacts.checkpoint import load_checkpoint_file
from mmae.artifacts.export import export_encoder, load_checkpoint_model, load_encoder
from mmae.artifacts.hub import push_to_hub
from mmae.artifacts.model_card import CARD, write_card
from mmae.artifacts.onnx import export_onnx
from mmae.cli.runner import run_command
from mmae.core.errors import ConfigError


def main(argv: list[str] | None = None) -> None:
    """`mmae-export RUN_OR_CKPT`: a training run or checkpoint -> an encoder export."""
    parser = argparse.ArgumentParser(prog="mmae-export", description=main.__doc__)
    parser.add_argument("checkpoint", metavar="RUN_OR_CKPT",
                        help="an mmae-train output directory (its checkpoints/best.ckpt) or a .ckpt it wrote")
    parser.add_argument("--output", help="export directory (default: <run dir>/encoder)")
    parser.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                        help="onnx: also write encoder.onnx, checked against PyTorch")
    parser.add_argument("--reference-pretrained", action="store_true",
                        help="name frozen pretrained backbones instead of storing their weights "
                             "(loading then needs those models locally)")
    parser.add_argument("--trust-code", action="store_true",
                        help="the checkpoint names a modality or fusion class of your own: import it")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME",
                        help="then upload the export and its card to this Hugging Face Hub model repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    parser.add_argument("--license", help="the card's license (a Hub license id, e.g. apache-2.0)")
    parser.add_argument("--dataset", action="append", default=[], dest="datasets", metavar="ID",
                        help="a dataset the encoder was trained on, for the card (repeatable)")
    args = parser.parse_args(argv)
    if args.private and not args.push_to_hub:
        parser.error("--private makes sense only with --push-to-hub ORG/NAME")
    run_command("mmae-export", lambda: _export(args))


def _locate(given: Path) -> tuple[Path, Path | None]:
    """The checkpoint and the run directory (None when the checkpoint is not in one)."""
    if given.is_dir():
        checkpoint = given / "checkpoints" / "best.ckpt"
        if not checkpoint.is_file():
            raise ConfigError(f"{given} is not an mmae-train run: no checkpoints/best.ckpt in it")
        return checkpoint, given
    run = given.resolve().parent.parent
    return given, run if (run / "config.yaml").is_file() else None


def _export(args: argparse.Namespace) -> None:
    checkpoint, run = _locate(Path(args.checkpoint))
    output = Path(args.output) if args.output else checkpoint.resolve().parent.parent / "encoder"
    card = output / CARD
    previous_card = card.read_text(encoding="utf-8") if card.is_file() else None
    labels = load_checkpoint_file(checkpoint, mmap=True).get("mmae_labels")  # (absent before mmae 0.4)
    export_encoder(load_checkpoint_model(checkpoint, trust_code=args.trust_code), output,
                   reference_pretrained=args.reference_pretrained, labels=labels)
    if previous_card is not None:  # (the export replaced the folder whole) its evaluations, license...
        write_text_atomic(card, previous_card)
    write_card(output, run_dir=run, license=args.license, datasets=args.datasets)
    print(f"mmae-export: encoder written to {output} (model card: {output / 'README.md'})")
    if args.format == "onnx":
        error = export_onnx(load_encoder(output, trust_code=args.trust_code), output / "encoder.onnx")
        check = ("not checked (install onnxruntime)" if error is None
                 else f"max |ONNX - PyTorch| = {error:.2e} on a random batch")
        print(f"mmae-export: ONNX graph written to {output / 'encoder.onnx'}; parity: {check}")
    if args.push_to_hub:
        url = push_to_hub(output, args.push_to_hub, private=args.private, license=args.license,
                          datasets=args.datasets)
        print(f"mmae-export: pushed to https://huggingface.co/{args.push_to_hub} ({url})")


if __name__ == "__main__":
    main()
