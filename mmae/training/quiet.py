"""What the commands leave out of their logs: Lightning's notices that tell a user nothing
about their run. Each filter matches one known message, with the reason it is dropped."""

from __future__ import annotations

import logging
import warnings

#: pytorch-lightning 2.6 advertises its hosted logger on every Trainer without one: an
#: advertisement, not a fact about the run.
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
#: pytorch-lightning 2.6 still calls torch 2.11's deprecated `LeafSpec` check in its own code
#: (`utilities/_pytree.py`); nothing a user can change.
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_lightning() -> None:
    """Install the filters (idempotent: a filter already there is not added twice)."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(LITLOGGER_TIP))
    warnings.filterwarnings("ignore", LEAFSPEC_WARNING, FutureWarning)
