"""A tiny trained run that the export, card and Hub tests read (copy it before changing it)."""

import pytest
from trained_runs import session_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return session_run(tmp_path_factory, "tiny-run", "trainer.max_epochs=1")
