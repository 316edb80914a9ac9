"""Config validation at composition time: unknown keys, wrong types, impossible combinations.

`validate_config(cfg, name)` runs right after a config is composed and before anything is
built (`mmae-train`, `train(cfg)`, and `compose_config` for mmae-eval / mmae-features), so a
typo or a wrong value fails at once with its dotted key path and what would be valid, rather
than as a TypeError deep inside `hydra.utils.instantiate`, or never.

- A node with a `_target_` takes the target's parameters as keys (any key when it takes
  `**kwargs`), plus Hydra's own `_partial_`, `_convert_`, `_recursive_` and `_args_`. Values are
  checked against the parameter annotations: `Literal` choices are listed, a number where a
  string is expected is accepted (Hydra's override parser reads `name=2024` as an int), and
  annotations that a config value cannot be judged against (classes, callables) accept any.
  Interpolations are checked on their resolved value; one that cannot be resolved here
  (`${hydra:...}` outside a Hydra app) is skipped.
- Nodes without a `_target_`: the top level of each entry config (train, evaluate, features)
  and its plain sections are declared below (`entry_schema`): unknown keys are refused there
  too, and `modality`, `callbacks` and `logger` map names to target nodes.
- `_check_train_combinations`: the few impossible combinations that the config alone shows.
"""

from __future__ import annotations

import collections.abc as cabc
import difflib
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import ListConfig, OmegaConf

from mmae.errors import ConfigError
from mmae.nonfinite import POLICIES

#: Settings in the `trainer` node that mmae reads itself rather than passing to Lightning
#: (name -> type). `mmae.train.build_trainer` leaves them out of the Trainer's arguments.
MMAE_TRAINER_KEYS: dict[str, Any] = {"on_nonfinite": Literal[POLICIES]}

#: The keys `hydra.utils.instantiate` reads itself, with their types.
HYDRA_KEYS: dict[str, Any] = {"_target_": str, "_partial_": bool, "_recursive_": bool,
                              "_convert_": str,  # (Hydra's ConvertMode ignores case)
                              "_args_": list}

#: torch.compile's modes (`torch._inductor.list_mode_options`).
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass(frozen=True)
class Target:
    """A node that `hydra.utils.instantiate` builds: its keys are the target's parameters.

    `passed`: parameters mmae supplies when it builds the node, so the config cannot set them;
    `own`: mmae's own settings kept in the node (name -> type), not passed to the target;
    `optional`: null (or an empty node, as `logger=none` composes) means "none".
    """

    passed: tuple[str, ...] = ()
    own: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False


@dataclass(frozen=True)
class Nodes:
    """`name: node` entries, each built as `entry` describes (null allowed where `entry.optional`);
    null or empty means none. `single`: one target node is accepted as well (as
    `mmae.train._build_all` reads `callbacks` and `logger`).
    """

    entry: Target = Target()
    single: bool = False


class _Ignored:
    """A section validated elsewhere (Hydra's own `hydra` node)."""


IGNORED = _Ignored()


def _train_schema() -> dict[str, Any]:
    return {
        "seed": int | None,
        "ckpt_path": str | None,
        "compile": bool,
        # torch.compile's keyword arguments (the model is compiled in place: no `model`).
        "compile_options": {"backend": str, "mode": CompileMode | None, "dynamic": bool | None,
                            "fullgraph": bool, "options": dict | None, "disable": bool},
        "optimizer": Target(passed=("params",)),
        "scheduler": Target(passed=("optimizer",), optional=True),
        "paths": dict[str, str],  # open: `+paths.data_dir=...` for interpolations is common
        "data": Target(passed=("modalities",)),
        "modality": Nodes(Target()),
        "model": Target(passed=("modalities", "fusion")),
        "fusion": Target(passed=("modalities", "embed_dim", "latent_dim")),
        "objective": Target(),
        "corruption": Target(),
        "trainer": Target(passed=("callbacks", "logger"), own=MMAE_TRAINER_KEYS),
        "logger": Nodes(Target(optional=True), single=True),
        "callbacks": Nodes(Target(optional=True), single=True),
        "hydra": IGNORED,
    }


def _evaluate_schema() -> dict[str, Any]:
    from mmae.evaluate import TASKS
    from mmae.latent_map import PROJECTIONS

    return {"task": Literal[TASKS], "projection": Literal[tuple(PROJECTIONS)], "noise_std": float,
            "cleaned": str | None, "seed": int, "run": str | None, "encoder": str | None,
            "checkpoint": str | None, "output": str | None,
            "data": Target(passed=("modalities",)), "hydra": IGNORED}


def _features_schema() -> dict[str, Any]:
    from mmae.data.batch import SPLITS

    return {"seed": int, "encoder": str | None, "output": str | None, "split": Literal[SPLITS],
            "modalities": list[str] | None, "data": Target(passed=("modalities",)), "hydra": IGNORED}


_ENTRY_SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "train": _train_schema, "evaluate": _evaluate_schema, "features": _features_schema}


@functools.cache
def entry_schema(name: str) -> dict[str, Any]:
    """The declared top level of `conf/<name>.yaml`: key -> type, `Target`, `Nodes` or section."""
    if name not in _ENTRY_SCHEMAS:
        raise ValueError(f"no schema for config '{name}'; known: {', '.join(_ENTRY_SCHEMAS)}")
    return _ENTRY_SCHEMAS[name]()


def validate_config(cfg: Mapping, name: str = "train") -> None:
    """Raise `ConfigError` for the first unknown key, wrong type or impossible combination in
    `cfg` (composed from `conf/<name>.yaml`), naming its dotted key and the valid choices."""
    _check_section(cfg, entry_schema(name), "", f"{name}.yaml")
    if name == "train":
        _check_train_combinations(cfg)


# --- values -----------------------------------------------------------------------------------

_MISSING = object()  # `???`
_UNRESOLVED = object()  # an interpolation that cannot be resolved outside a Hydra app


def _get(node: Any, key: Any, default: Any = None) -> Any:
    """`node[key]`, interpolations resolved; `_MISSING` or `_UNRESOLVED` where it has no value,
    `default` where a mapping has no such key."""
    if _is_mapping(node) and not _has(node, key):
        return default
    try:
        if OmegaConf.is_config(node) and OmegaConf.is_missing(node, key):
            return _MISSING
        return node[key]
    except Exception:  # e.g. ${hydra:...} outside a Hydra app: nothing to check here
        return _UNRESOLVED


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, ListConfig))


def _is_target_node(value: Any) -> bool:
    return _is_mapping(value) and _has(value, "_target_")


def _has(node: Mapping, key: Any) -> bool:
    """`key in node` without resolving the value (DictConfig's `in` resolves interpolations)."""
    return key in (node.keys() if OmegaConf.is_config(node) else node)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if _is_mapping(value) or _is_list(value):
        return f"{OmegaConf.to_container(value) if OmegaConf.is_config(value) else value!r}"
    return f"{value!r} ({type(value).__name__})"


def _unknown_key(path: str, key: str, valid: Sequence[str], owner: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown key '{_join(path, key)}'{hint}; the valid keys of {owner}: "
                       f"{', '.join(valid) or '(none)'}")


def _check_value(value: Any, spec: Any, path: str, recursive: bool = True) -> None:
    """Check one value against its schema entry: a type annotation, `Target`, `Nodes` or a
    section (dict)."""
    if value is _UNRESOLVED or spec is IGNORED:
        return
    if value is _MISSING:
        raise ConfigError(f"{path} is required (it is ???): set it, e.g. {path}=...")
    if isinstance(spec, Target):
        _check_target(value, spec, path)
    elif isinstance(spec, Nodes):
        _check_nodes(value, spec, path)
    elif isinstance(spec, dict):
        _check_section(value, spec, path, path)
    else:
        mismatch = _mismatch(value, spec, path, recursive)
        if mismatch is not None:
            raise ConfigError(mismatch[1])


def _check_section(node: Any, schema: Mapping[str, Any], path: str, owner: str) -> None:
    if not _is_mapping(node):
        raise ConfigError(f"{path or owner} must be a mapping with keys {', '.join(schema)}; "
                          f"got {_show(node)}")
    for key in node:
        if str(key) not in schema:
            valid = [k for k, spec in schema.items() if spec is not IGNORED]
            raise _unknown_key(path, str(key), valid, owner if path else f"the top level of {owner}")
    for key, spec in schema.items():
        if _has(node, key):
            _check_value(_get(node, key), spec, _join(path, key))


def _check_nodes(node: Any, spec: Nodes, path: str) -> None:
    if node is None or (_is_mapping(node) and not node):
        return  # `modality` empty: build_modalities lists the modality configs to choose from
    if _is_target_node(node):
        if spec.single:
            _check_target(node, spec.entry, path)
            return
        raise ConfigError(f"{path} maps names to nodes with a _target_ (e.g. {path}.image: ...), "
                          "not one node")
    if not _is_mapping(node):
        raise ConfigError(f"{path} must map names to nodes with a _target_; got {_show(node)}")
    for name in node:
        value = _get(node, name)
        if value is None and not spec.entry.optional:
            raise ConfigError(f"{_join(path, name)} is null: leave it out of {path} instead "
                              f"(e.g. {path}=[...] without {name})")
        _check_value(value, spec.entry, _join(path, name))


# --- target nodes -----------------------------------------------------------------------------

@dataclass
class _Signature:
    parameters: dict[str, inspect.Parameter]
    hints: dict[str, Any]
    var_keyword: bool


@functools.cache
def _locate(target: str) -> Any:
    from hydra._internal.utils import _locate as locate

    return locate(target)


def _annotation(raw: Any, module: str | None) -> Any:
    """A parameter's annotation as an object, or Any when it does not resolve here."""
    if raw is inspect.Parameter.empty:
        return Any
    if not isinstance(raw, str):
        return raw
    try:
        return eval(raw, dict(vars(sys.modules[module])) if module in sys.modules else {})
    except Exception:  # a TYPE_CHECKING-only name: cannot be judged
        return Any


@functools.cache
def _signature(target: Any) -> _Signature | None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: cannot be judged
        return None
    function = inspect.unwrap(target.__init__ if isinstance(target, type) else target)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # some annotation does not resolve: resolve them one by one
        module = getattr(function, "__module__", None)
        hints = {name: _annotation(p.annotation, module) for name, p in signature.parameters.items()}
    parameters = {name: p for name, p in signature.parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    return _Signature(parameters, hints, var_keyword)


def _target_of(node: Mapping, path: str) -> tuple[str, Any]:
    name = _get(node, "_target_")
    if not isinstance(name, str):
        raise ConfigError(f"{path}._target_ must be a dotted import path, got {_show(name)}")
    try:
        return name, _locate(name)
    except Exception as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path}._target_: cannot import '{name}' ({reason})") from None


def _check_target(node: Any, spec: Target, path: str) -> None:
    if not _is_target_node(node):
        if spec.optional and (node is None or (_is_mapping(node) and not node)):
            return
        raise ConfigError(f"{path} needs a _target_ (the class or function that builds it); "
                          f"got {_show(node)}")
    name, target = _target_of(node, path)
    signature = _signature(target)
    recursive = _get(node, "_recursive_") is not False
    if signature is None:
        return
    valid = [p for p in signature.parameters if p not in spec.passed] + list(spec.own)
    for key in node:
        key_path = _join(path, key)
        if key in HYDRA_KEYS or key in spec.own:
            _check_value(_get(node, key), HYDRA_KEYS.get(key) or spec.own[key], key_path)
        elif key in spec.passed:
            raise ConfigError(f"{key_path} cannot be set in the config: mmae passes it when it "
                              f"builds {path}")
        elif key in signature.parameters:
            value = _get(node, key)
            if value is None and signature.parameters[key].default is None:
                continue
            _check_value(value, signature.hints.get(key, Any), key_path, recursive)
        elif signature.var_keyword:
            if recursive:
                _walk(_get(node, key), key_path)
        else:
            raise _unknown_key(path, str(key), valid, name)
    if _get(node, "_partial_") is not True and not _has(node, "_args_"):
        missing = [p for p, parameter in signature.parameters.items()
                   if parameter.default is inspect.Parameter.empty and not _has(node, p)
                   and p not in spec.passed]
        if missing:
            raise ConfigError(f"{path}: {name} needs {', '.join(missing)}; "
                              f"set {_join(path, missing[0])}=...")


def _walk(value: Any, path: str) -> None:
    """Validate the target nodes anywhere inside a value that is not type-checked itself."""
    if _is_target_node(value):
        _check_target(value, Target(), path)
    elif _is_mapping(value):
        for key in value:
            _walk(_get(value, key), _join(path, key))
    elif _is_list(value):
        for index in range(len(value)):
            _walk(_get(value, index), f"{path}[{index}]")


# --- annotations ------------------------------------------------------------------------------

_SEQUENCES = {list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Iterable,
              cabc.Collection, cabc.Set, cabc.MutableSet}
_MAPPINGS = {dict, cabc.Mapping, cabc.MutableMapping}
_NAMES = {bool: "true or false", int: "an int", float: "a number", str: "a string"}


def _base(annotation: Any) -> Any:
    return typing.get_origin(annotation) or annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _is_config_form(annotation: Any) -> bool:
    """Whether a config value can take this form directly (scalars, choices, lists, mappings)."""
    base = _base(annotation)
    return base in _NAMES or base is Literal or base in _SEQUENCES or base in _MAPPINGS


def _describe(annotation: Any) -> str:
    base = _base(annotation)
    if base in _NAMES:
        return _NAMES[base]
    if base in _SEQUENCES:
        return "a list"
    if base in _MAPPINGS:
        return "a mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _choice(value: Any) -> str:
    return "null" if value is None else str(value)


def _literal_mismatch(value: Any, literals: Sequence[Any], path: str, others: Sequence[Any] = (),
                      nullable: bool = False) -> tuple[str, str] | None:
    """Whether `value` is one of the Literals' choices (type included: 16 is not '16');
    `others`: the union's other members, named in the message."""
    choices = [c for member in literals for c in typing.get_args(member)]
    if any(type(value) is type(c) and value == c for c in choices):
        return None
    shown = dict.fromkeys([*(_choice(c) for c in choices), *(["null"] if nullable else [])])
    also = f" (or {' or '.join(_describe(m) for m in others)})" if others else ""
    return path, f"{path} must be one of {', '.join(shown)}{also}; got {_show(value)}"


def _mismatch(value: Any, annotation: Any, path: str, recursive: bool = True) -> tuple[str, str] | None:
    """Why `value` does not fit `annotation`, as (path of the bad value, message), or None."""
    if value is _UNRESOLVED or value is _MISSING:
        return None
    if _is_target_node(value):  # built by instantiate: what it returns is not known here
        if recursive:
            _check_target(value, Target(), path)
        return None
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if _is_union(annotation):
        return _union_mismatch(value, typing.get_args(annotation), path, recursive)
    base = _base(annotation)
    if base is Literal:
        return _literal_mismatch(value, [annotation], path)
    if annotation is type(None):
        return None if value is None else (path, f"{path} must be null; got {_show(value)}")
    if base in _NAMES:
        fits = {bool: lambda v: isinstance(v, bool),
                int: lambda v: isinstance(v, int) and not isinstance(v, bool),
                float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                str: lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool)}[base]
        return None if fits(value) else (path, f"{path} must be {_NAMES[base]}; got {_show(value)}")
    if base in _SEQUENCES:
        return _sequence_mismatch(value, annotation, path, recursive)
    if base in _MAPPINGS:
        if not _is_mapping(value):
            return path, f"{path} must be a mapping; got {_show(value)}"
        args = typing.get_args(annotation)
        for key in value:
            item = _mismatch(_get(value, key), args[1] if len(args) == 2 else Any, _join(path, key),
                             recursive)
            if item is not None:
                return item
        return None
    # Any, classes, callables, type variables: a config value cannot be judged against them.
    if recursive:
        _walk(value, path)
    return None


def _sequence_mismatch(value: Any, annotation: Any, path: str, recursive: bool) -> tuple[str, str] | None:
    if not _is_list(value):
        return path, f"{path} must be a list; got {_show(value)}"
    args = typing.get_args(annotation)
    if _base(annotation) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            return path, f"{path} must be a list of {len(args)} items; got {_show(value)}"
        items = args
    else:
        items = [args[0] if args else Any] * len(value)
    for index, item in enumerate(items):
        problem = _mismatch(_get(value, index), item, f"{path}[{index}]", recursive)
        if problem is not None:
            return problem
    return None


def _union_mismatch(value: Any, members: Sequence[Any], path: str, recursive: bool) -> tuple[str, str] | None:
    nullable = type(None) in members
    if value is None or Any in members:
        return None if nullable or Any in members else (
            path, f"{path} must be {' or '.join(_describe(m) for m in members)}; got null")
    # Where the union names config forms (int, str, a list, ...), a value must take one of
    # them: e.g. AdamW's `lr: float | Tensor` takes a number, not 'abc'. A union of classes
    # only (or callables) cannot be judged.
    forms = [m for m in members if _is_config_form(m)]
    if not forms:
        if recursive:
            _walk(value, path)
        return None
    problems = []
    for member in forms:
        problem = _mismatch(value, member, path, recursive)
        if problem is None:
            return None
        problems.append(problem)
    nested = [p for p in problems if p[0] != path]  # e.g. one bad item of a list
    if len(nested) == 1:
        return nested[0]
    literals = [m for m in forms if _base(m) is Literal]
    others = [m for m in forms if _base(m) is not Literal]
    if literals:
        return _literal_mismatch(value, literals, path, others, nullable)
    named = [_describe(m) for m in forms] + (["null"] if nullable else [])
    return path, f"{path} must be {' or '.join(named)}; got {_show(value)}"


# --- combinations -----------------------------------------------------------------------------

def _check_train_combinations(cfg: Mapping) -> None:
    """Choices that are each valid but cannot work together, saying what to choose instead."""
    _check_precision(cfg.get("trainer"))
    _check_compile(cfg)
    _check_encoder(cfg.get("model"), cfg.get("fusion"))
    _check_ckpt_path(cfg)


def _check_precision(trainer: Any) -> None:
    if not _is_mapping(trainer):
        return
    accelerator, precision = _get(trainer, "accelerator"), _get(trainer, "precision")
    if accelerator == "cpu" and str(precision) in ("16", "16-mixed"):
        raise ConfigError(
            f"trainer.precision={precision} (float16 mixed precision) needs a GPU, but "
            "trainer.accelerator=cpu (Lightning would quietly switch to bf16-mixed): choose "
            "trainer.precision=bf16-mixed or 32-true on the CPU, or trainer=gpu")


def _check_compile(cfg: Mapping) -> None:
    options = cfg.get("compile_options")
    if _get(cfg, "compile") is not True or not _is_mapping(options):
        return
    mode, inductor = _get(options, "mode"), _get(options, "options")
    if mode not in (None, _UNRESOLVED, _MISSING) and inductor not in (None, _UNRESOLVED, _MISSING):
        raise ConfigError(
            f"compile_options.mode={mode} and compile_options.options cannot both be set "
            "(torch.compile takes one or the other): set compile_options.options=null, or "
            "compile_options.mode=null and put the settings you need in options")


def _check_encoder(model: Any, fusion: Any) -> None:
    """The model/fusion choices `MultimodalEncoder` refuses, found from the config alone."""
    if not (_is_target_node(model) and _is_target_node(fusion)):
        return
    from mmae.fusion import Fusion
    from mmae.model import MultimodalAutoencoder, check_encoder_choices

    model_cls, fusion_cls = _locate(model["_target_"]), _locate(fusion["_target_"])
    if not (isinstance(model_cls, type) and issubclass(model_cls, MultimodalAutoencoder)
            and isinstance(fusion_cls, type) and issubclass(fusion_cls, Fusion)):
        return  # the user's own classes: their own checks apply when they are built
    defaults = inspect.signature(model_cls).parameters
    if not all(key in defaults for key in ("variational", "latent_activation")):
        return  # a subclass with other arguments: its own checks apply when it is built
    settings = {key: _get(model, key, defaults[key].default)
                for key in ("variational", "latent_activation")}
    if not any(v in (_UNRESOLVED, _MISSING) for v in settings.values()):
        check_encoder_choices(fusion_cls, **settings)


def _check_ckpt_path(cfg: Mapping) -> None:
    """A checkpoint to resume from must exist (`mmae.resume.resolve_ckpt_path` decides)."""
    ckpt_path = _get(cfg, "ckpt_path")
    if not isinstance(ckpt_path, str) or not ckpt_path:
        return
    from mmae.resume import resolve_ckpt_path

    output_dir = _get(cfg.get("paths") or {}, "output_dir")
    if not isinstance(output_dir, str):
        if ckpt_path in ("last", "auto"):
            return  # the run directory is not known here
        output_dir = "."
    resolve_ckpt_path(ckpt_path, Path(output_dir))
