"""Every `mmae-eval` task, registered: importing this module imports each task's module, so
`mmae.core.registry.EVALUATIONS` then names them all (the CLI and the config schema read it)."""

from __future__ import annotations

from mmae.analysis import cluster, coherence, compression, retrieval, robustness, standard_tasks
from mmae.core.registry import EVALUATIONS

#: The modules that register tasks, in the order `task=all` runs and prints them (the
#: registry's own order depends on which module happened to be imported first).
TASK_MODULES = (standard_tasks, coherence, robustness, cluster, retrieval, compression)
#: `task=all`: every task that applies to the run.
ALL = "all"


def tasks() -> list[str]:
    """The registered tasks, in `TASK_MODULES` order (a task of another module last)."""
    modules = [module.__name__ for module in TASK_MODULES]

    def place(name: str) -> int:
        module = EVALUATIONS[name].__module__
        return modules.index(module) if module in modules else len(modules)

    return sorted(EVALUATIONS.names(), key=place)  # stable: registration order within a module


def task_names() -> list[str]:
    return [*tasks(), ALL]
