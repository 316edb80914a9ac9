"""The one registry of component names: modalities, fusions, loss terms and evaluation tasks.

Each of mmae's own components registers itself where it is defined
(`@MODALITIES.register("image")`), and everything that needs the list reads it here: the
export (which stores `"poe"`, not a module path, so moving a module never breaks an export),
the config checks, the synthetic data and the tests. Registration happens when the defining
module is imported (`mmae.modalities`, `mmae.core.fusion`, `mmae.core.objectives`), so a
reader imports that package before it looks names up. A component of the user's own, in a
module outside mmae, needs no registration: configs name it by `_target_`, exports by its
import path (`package.module:Class`), and loading such an export needs `trust_code=True`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mmae.core.errors import ConfigError, ExportError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Names of one kind of component -> the class, in registration order."""

    def __init__(self, kind: str, former_module: str | None = None):
        self.kind = kind
        #: Where mmae 0.2 (export format 2) said these classes lived: `<former_module>.<Class>`.
        self.former_module = former_module
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: register the class under `name` (a config and export name)."""
        def add(cls: T) -> T:
            if name in self._classes and self._classes[name] is not cls:
                taken = self._classes[name].__qualname__
                raise ConfigError(f"{self.kind} name '{name}' is taken by {taken}; "
                                  f"choose another for {cls.__qualname__}")
            self._classes[name] = cls
            return cls
        return add

    def __getitem__(self, name: str) -> T:
        classes = self._classes
        if name not in classes:
            raise ConfigError(f"unknown {self.kind} '{name}'; registered: {', '.join(classes)}")
        return classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._classes))

    def names(self) -> list[str]:
        return list(self._classes)

    def name_of(self, cls: type) -> str | None:
        """The registered name of exactly `cls` (not of a subclass), or None."""
        return next((name for name, known in self._classes.items() if known is cls), None)

    # -- how exports and checkpoints name a class ------------------------------------------

    def reference(self, obj: object) -> str:
        """How an artifact names the class of `obj`: its registered name, or for a class of
        the user's own its import path `module:QualName` (which must be importable)."""
        cls = type(obj)
        name = self.name_of(cls)
        if name is not None:
            return name
        if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
            raise ConfigError(f"{self.kind} class {cls.__qualname__} (module {cls.__module__}) cannot be "
                              "saved: define it at the top level of an importable module, so that "
                              "loading can find it by its import path")
        return f"{cls.__module__}:{cls.__qualname__}"

    def resolve(self, reference: object, base: type, trust_code: bool = False, where: str = "") -> T:
        """The class an artifact names: a registered name; an mmae class under its former
        module path (`mmae.fusion.PoEFusion`, exports of format 2); or, with `trust_code`,
        the import path of a class of the user's own, which must subclass `base`."""
        if not isinstance(reference, str) or not reference:
            raise ExportError(f"{where}: {self.kind} class {reference!r} is not a class name")
        classes = self._classes
        if reference in classes:
            return classes[reference]
        former = {f"{self.former_module}.{cls.__name__}": cls for cls in classes.values()}
        if self.former_module and reference in former:
            return former[reference]
        if not trust_code:
            raise ExportError(
                f"{where}: {self.kind} class '{reference}' is not one of mmae's ({', '.join(classes)}); "
                "building it runs the code of its module. If you trust it, load with trust_code=True "
                "(mmae.load_encoder(path, trust_code=True) or mmae.load_checkpoint_model(path, "
                "trust_code=True); on the command line mmae-eval / mmae-features trust_code=true, "
                "mmae-export --trust-code)")
        return _import_class(reference, base, self.kind, where)


def _import_class(reference: str, base: type, kind: str, where: str) -> type:
    """`package.module:Qual.Name` (or `package.module.Name`) -> the class, a `base` subclass."""
    if ":" in reference:
        module_name, qualname = reference.split(":", 1)
    else:
        module_name, _, qualname = reference.rpartition(".")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as error:
        raise ExportError(f"{where}: cannot import {kind} class '{reference}': {error}") from None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise ExportError(f"{where}: '{reference}' is not a {base.__name__} subclass")
    return obj


MODALITIES: Registry = Registry("modality", former_module="mmae.modalities")
FUSIONS: Registry = Registry("fusion", former_module="mmae.fusion")
LOSS_TERMS: Registry = Registry("loss term")
#: `mmae-eval` tasks (`mmae.evaluation.base.Evaluation` subclasses), registered in `mmae.evaluation`.
EVALUATIONS: Registry = Registry("evaluation task")
