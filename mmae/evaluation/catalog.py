"""Every `mmae-eval` task, registered: importing this module imports each module of
`mmae.evaluation.tasks`, so `mmae.core.registry.EVALUATIONS` then names them all (the CLI and
the config schema read it). A task of the user's own is imported by its path instead
(`mmae-eval task=my_pkg.MyTask trust_code=true`)."""

from __future__ import annotations

import importlib
import pkgutil

from mmae.core.registry import EVALUATIONS
from mmae.evaluation import tasks as task_package

for _module in pkgutil.iter_modules(task_package.__path__):
    importlib.import_module(f"{task_package.__name__}.{_module.name}")

#: `task=all`: every task that applies to the run.
ALL = "all"


def tasks() -> list[str]:
    """The registered tasks in the order `task=all` runs and prints them: by each class's
    `order`, then by name."""
    return sorted(EVALUATIONS.names(), key=lambda name: (EVALUATIONS[name].order, name))


def task_names() -> list[str]:
    return [*tasks(), ALL]
