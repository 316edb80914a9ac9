"""The Lightning side: the LightningModule (training logic only), datamodules, the
non-finite guard, random state, W&B run lifetime and media callbacks, atomic checkpoint IO.
"""
