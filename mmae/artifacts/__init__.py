"""Files a run leaves behind and what reads them: atomic writes, checkpoint files,
encoder export / `load_encoder`, ONNX graphs. No Lightning, Hydra or W&B.
"""
