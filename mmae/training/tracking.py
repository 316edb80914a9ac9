"""Experiment tracking with Weights & Biases: a run always ends, the process is left as found,
offline is the default without an account, and the exported encoder becomes a model artifact.

WandbLogger(offline=True) sets WANDB_MODE for the whole process, wandb reads its settings
(that mode included) only when it is first set up in a process, and a run left open is
reused by the next `wandb.init`; `tracking_session` deals with all three however the job
ends. Nothing here imports wandb unless a WandbLogger is in use.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def finish_wandb(exit_code: int = 0) -> None:
    """Finish the active W&B run, if any, then tear wandb's process state down (without
    importing wandb when nothing used it).

    wandb reads its settings, WANDB_MODE included, once per process: without the teardown a
    later run in the same process (a test, a notebook cell, a sequential sweep) would keep
    this run's mode whatever the environment says by then.
    """
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    if getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)
    wandb.teardown()


def _reset_idle_wandb() -> None:
    """Drop wandb's process state left by earlier use, unless a run is active (which a
    WandbLogger then joins): the job's own WANDB_MODE (the logger's `offline`) must count."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is None:
        wandb.teardown()


@contextmanager
def tracking_session() -> Iterator[None]:
    """Run a job with wandb's process state as the job configures it: reset before (unless a
    run is active), and after, any run finished (exit code 1 on an error), the state reset
    and WANDB_MODE restored."""
    mode = os.environ.get("WANDB_MODE")
    _reset_idle_wandb()
    try:
        yield
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    else:
        finish_wandb()
    finally:
        if mode is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = mode


def wandb_offline_default() -> bool:
    """The `mmae.wandb_offline` resolver: offline only when nothing says how to reach W&B.

    With WANDB_MODE set (online, offline, disabled) the answer is False so that wandb itself
    honours it: WandbLogger(offline=True) would overwrite it with "dryrun". Without it, a run
    goes online only when an API key is configured, so that a machine with no account never
    stops at a login prompt.
    """
    if os.environ.get("WANDB_MODE"):
        return False
    return not wandb_credentials_configured()


def wandb_credentials_configured() -> bool:
    """Whether wandb would find credentials: WANDB_API_KEY, an identity token file, or a
    netrc entry for the configured host (read with wandb's own netrc lookup)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:  # wandb's own lookup (host from its settings); a private module, hence the fallback
        from wandb.errors import AuthenticationError
        from wandb.sdk.lib import urls, wbauth
    except ImportError:
        return _netrc_has(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")

    host = os.environ.get("WANDB_BASE_URL") or urls.DEFAULT_BASE_URL
    try:
        return wbauth.read_netrc_auth(host=host) is not None
    except (ValueError, AuthenticationError):
        return True  # something is configured but wrong: let wandb itself say what


def _netrc_has(base_url: str) -> bool:
    """Whether ~/.netrc (or $NETRC) holds a login for the host of `base_url`."""
    import netrc
    from urllib.parse import urlparse

    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(base_url).hostname) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False

def wandb_loggers(loggers: Iterable) -> list:
    """The WandbLoggers among `loggers` (a type check: wandb is not imported, no run starts)."""
    from pytorch_lightning.loggers import WandbLogger  # Lightning imports wandb lazily

    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def recording(loggers: Iterable) -> list:
    """The WandbLoggers whose run keeps what is logged: not those of WANDB_MODE=disabled, so
    nothing is computed for them. Starts a run not yet started."""
    return [logger for logger in loggers if not getattr(logger.experiment, "disabled", False)]


def encoder_metadata(encoder_dir: Path, report: Mapping) -> dict:
    """What a model registry shows next to the encoder: versions, sizes, modalities and the
    run's headline metrics (from the export's config.json and the run's report)."""
    from mmae.artifacts.export import CONFIG

    description = json.loads((Path(encoder_dir) / CONFIG).read_text())
    metrics = report.get("metrics", {})
    return {
        "mmae_version": description.get("mmae_version"),
        "format_version": description.get("format_version"),
        "latent_dim": description["encoder"]["latent_dim"],
        "variational": description["encoder"]["variational"],
        # registered names ("poe", "image"), or import paths of the user's own classes
        "fusion": description["fusion"]["class"],
        "modalities": {name: entry["class"] for name, entry in description["modalities"].items()},
        "epochs": report.get("epochs"),
        "val_loss": metrics.get("val/loss"),
        "imputation": report.get("imputation", {}),
    }


def log_encoder_artifact(loggers: Iterable, encoder_dir: str | Path, report: Mapping) -> None:
    """Record the exported encoder as a W&B model artifact `encoder-<run id>` in the run of
    every WandbLogger among `loggers` (wandb is not imported when there is none)."""
    targets = recording(wandb_loggers(loggers))
    if not targets:
        return
    import wandb

    metadata = encoder_metadata(Path(encoder_dir), report)
    for logger in targets:
        run = logger.experiment
        artifact = wandb.Artifact(f"encoder-{run.id}", type="model", metadata=metadata,
                                  description="mmae encoder export (load with mmae.load_encoder)")
        artifact.add_dir(str(encoder_dir))
        run.log_artifact(artifact, aliases=["latest"])


def previous_run_id(output_dir: str | Path) -> str | None:
    """The id of the last W&B run logged under `output_dir` (wandb's `latest-run` link points
    to `[offline-]run-<time>-<id>`), or None."""
    latest = Path(output_dir) / "wandb" / "latest-run"
    return latest.resolve().name.rsplit("-", 1)[-1] if latest.exists() else None

