"""A checker of config nodes against declared schemas and the annotations of their targets.

Generic: nothing here knows mmae's configs (those are declared in `mmae.config.schema`).

- A node with a `_target_` takes the target's parameters as keys (any key when it takes
  `**kwargs`), plus Hydra's own `_partial_`, `_convert_`, `_recursive_` and `_args_`. Values are
  checked against the parameter annotations: `Literal` choices are listed, a number where a
  string is expected is accepted (Hydra's override parser reads `name=2024` as an int), and
  annotations that a config value cannot be judged against (classes, callables) accept any.
  Interpolations are checked on their resolved value; one that cannot be resolved here
  (`${hydra:...}` outside a Hydra app) is skipped.
- Nodes without a `_target_` are checked against a declared section (key -> type, `Target`,
  `Nodes` or a nested section): unknown keys are refused there too.
"""


from __future__ import annotations

import collections.abc as cabc
import difflib
import functools
import inspect
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from omegaconf import ListConfig, OmegaConf

from mmae.core.errors import ConfigError

#: The keys `hydra.utils.instantiate` reads itself, with their types.
HYDRA_KEYS: dict[str, Any] = {"_target_": str, "_partial_": bool, "_recursive_": bool,
                              "_convert_": str,  # (Hydra's ConvertMode ignores case)
                              "_args_": list}


@dataclass(frozen=True)
class Target:
    """A node that `hydra.utils.instantiate` builds: its keys are the target's parameters.

    `passed`: parameters mmae supplies when it builds the node, so the config cannot set them;
    `optional`: null (or an empty node, as `logger=none` composes) means "none".
    """

    passed: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class Nodes:
    """`name: node` entries, each built as `entry` describes (null allowed where `entry.optional`);
    null or empty means none. `single`: one target node is accepted as well (as
    `mmae.config.assembly.build_all` reads `callbacks` and `logger`).
    """

    entry: Target = Target()
    single: bool = False


class _Ignored:
    """A section validated elsewhere (Hydra's own `hydra` node)."""


IGNORED = _Ignored()

# --- values -----------------------------------------------------------------------------------

MISSING = object()  # `???`
UNRESOLVED = object()  # an interpolation that cannot be resolved outside a Hydra app


def get(node: Any, key: Any, default: Any = None) -> Any:
    """`node[key]`, interpolations resolved; `MISSING` or `UNRESOLVED` where it has no value,
    `default` where a mapping has no such key."""
    if is_mapping(node) and not _has(node, key):
        return default
    try:
        if OmegaConf.is_config(node) and OmegaConf.is_missing(node, key):
            return MISSING
        return node[key]
    except Exception:  # e.g. ${hydra:...} outside a Hydra app: nothing to check here
        return UNRESOLVED


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, ListConfig))


def is_target_node(value: Any) -> bool:
    return is_mapping(value) and _has(value, "_target_")


def _has(node: Mapping, key: Any) -> bool:
    """`key in node` without resolving the value (DictConfig's `in` resolves interpolations)."""
    return key in (node.keys() if OmegaConf.is_config(node) else node)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if is_mapping(value) or _is_list(value):
        return f"{OmegaConf.to_container(value) if OmegaConf.is_config(value) else value!r}"
    return f"{value!r} ({type(value).__name__})"


def _unknown_key(path: str, key: str, valid: Sequence[str], owner: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    # Without a near miss the key is more likely a default that another class lacks (e.g. the
    # default optimizer's `fused` under RMSprop) than a typo: say how to remove it.
    drop = "" if close else f"; drop it with ~{_join(path, key)}"
    return ConfigError(f"unknown key '{_join(path, key)}'{hint}; the valid keys of {owner}: "
                       f"{', '.join(valid) or '(none)'}{drop}")


def _check_value(value: Any, spec: Any, path: str, recursive: bool = True) -> None:
    """Check one value against its schema entry: a type annotation, `Target`, `Nodes` or a
    section (dict)."""
    if value is UNRESOLVED or spec is IGNORED:
        return
    if value is MISSING:
        raise ConfigError(f"{path} is required (it is ???): set it, e.g. {path}=...")
    if isinstance(spec, Target):
        _check_target(value, spec, path)
    elif isinstance(spec, Nodes):
        _check_nodes(value, spec, path)
    elif isinstance(spec, dict):
        check_section(value, spec, path, path)
    else:
        mismatch = _mismatch(value, spec, path, recursive)
        if mismatch is not None:
            raise ConfigError(mismatch[1])


def check_section(node: Any, schema: Mapping[str, Any], path: str, owner: str) -> None:
    if not is_mapping(node):
        raise ConfigError(f"{path or owner} must be a mapping with keys {', '.join(schema)}; "
                          f"got {_show(node)}")
    for key in node:
        if str(key) not in schema:
            valid = [k for k, spec in schema.items() if spec is not IGNORED]
            raise _unknown_key(path, str(key), valid, owner if path else f"the top level of {owner}")
    for key, spec in schema.items():
        if _has(node, key):
            _check_value(get(node, key), spec, _join(path, key))


def _check_nodes(node: Any, spec: Nodes, path: str) -> None:
    if node is None or (is_mapping(node) and not node):
        return  # `modality` empty: build_modalities lists the modality configs to choose from
    if is_target_node(node):
        if spec.single:
            _check_target(node, spec.entry, path)
            return
        raise ConfigError(f"{path} maps names to nodes with a _target_ (e.g. {path}.image: ...), "
                          "not one node")
    if not is_mapping(node):
        raise ConfigError(f"{path} must map names to nodes with a _target_; got {_show(node)}")
    for name in node:
        value = get(node, name)
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
def locate(target: str) -> Any:
    """The object a `_target_` names (imported as Hydra will), cached."""
    # (Hydra's private `_locate`, as `instantiate` uses it: the public `get_object` logs an
    # error of its own before raising, and the checker's message names the key instead.)
    from hydra._internal.utils import _locate

    return _locate(target)


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
    name = get(node, "_target_")
    if not isinstance(name, str):
        raise ConfigError(f"{path}._target_ must be a dotted import path, got {_show(name)}")
    try:
        return name, locate(name)
    except Exception as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path}._target_: cannot import '{name}' ({reason})") from None


def _check_target(node: Any, spec: Target, path: str) -> None:
    if not is_target_node(node):
        if spec.optional and (node is None or (is_mapping(node) and not node)):
            return
        raise ConfigError(f"{path} needs a _target_ (the class or function that builds it); "
                          f"got {_show(node)}")
    name, target = _target_of(node, path)
    signature = _signature(target)
    recursive = get(node, "_recursive_") is not False
    if signature is None:
        return
    valid = [p for p in signature.parameters if p not in spec.passed]
    for key in node:
        key_path = _join(path, key)
        if key in HYDRA_KEYS:
            _check_value(get(node, key), HYDRA_KEYS[key], key_path)
        elif key in spec.passed:
            raise ConfigError(f"{key_path} cannot be set in the config: mmae passes it when it "
                              f"builds {path}")
        elif key in signature.parameters:
            value = get(node, key)
            if value is None and signature.parameters[key].default is None:
                continue
            _check_value(value, signature.hints.get(key, Any), key_path, recursive)
        elif signature.var_keyword:
            if recursive:
                _walk(get(node, key), key_path)
        else:
            raise _unknown_key(path, str(key), valid, name)
    if get(node, "_partial_") is not True and not _has(node, "_args_"):
        missing = [p for p, parameter in signature.parameters.items()
                   if parameter.default is inspect.Parameter.empty and not _has(node, p)
                   and p not in spec.passed]
        if missing:
            raise ConfigError(f"{path}: {name} needs {', '.join(missing)}; "
                              f"set {_join(path, missing[0])}=...")


def _walk(value: Any, path: str) -> None:
    """Validate the target nodes anywhere inside a value that is not type-checked itself."""
    if is_target_node(value):
        _check_target(value, Target(), path)
    elif is_mapping(value):
        for key in value:
            _walk(get(value, key), _join(path, key))
    elif _is_list(value):
        for index in range(len(value)):
            _walk(get(value, index), f"{path}[{index}]")


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
    if value is UNRESOLVED or value is MISSING:
        return None
    if is_target_node(value):  # built by instantiate: what it returns is not known here
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
        if not is_mapping(value):
            return path, f"{path} must be a mapping; got {_show(value)}"
        args = typing.get_args(annotation)
        for key in value:
            item = _mismatch(get(value, key), args[1] if len(args) == 2 else Any, _join(path, key),
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
        problem = _mismatch(get(value, index), item, f"{path}[{index}]", recursive)
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
