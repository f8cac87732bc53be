"""Configuration as data: what a setting means lives on its dataclass field.

A field declared with :func:`param` carries its documentation, its allowed values (a
closed ``range`` or a tuple of ``choices``, optionally a ``pattern`` accepted besides the
choices), whether the running node may change it (``live``) and, for an old spelling,
what it was renamed to. Everything else reads that metadata:

* :func:`from_dict` builds a (nested) dataclass from plain data (YAML, JSON, ROS
  parameters), converting each value by the field's annotation with :func:`coerce`;
* :func:`field_errors` checks ranges and choices and names every offending field;
* :func:`parameters` lists the dotted parameter names of a dataclass tree with their
  :class:`Param`, annotation and default (the ROS descriptors, the YAML comments and
  ``docs/parameters.md`` are made from it);
* :func:`parse_assignments` and :func:`assign` apply ``name=value`` overrides (``--set``).

Coercion rules (one set for the node, the command line and training):

========== ==================================================================================
bool       ``true``/``false`` or the strings true/false/yes/no/on/off (any case); numbers refused
int        integers, integral floats (``2.0``) and numeric strings (``"3"``, ``"1e3"``); not bool
float      numbers and numeric strings (YAML 1.1 reads ``5e-5`` as a string); not bool
str        strings only
lists      any sequence, element by element; a single value becomes a one-element list and
           null an empty one (ROS reads ``[]`` in a params file as "not set") for
           ``List[X]``/``Tuple[X, ...]``; fixed tuples need exactly their length
Optional   ``None`` (YAML ``null``) accepted
dataclass  a mapping, through :func:`from_dict`
========== ==================================================================================

Nothing here imports torch, OpenCV or ROS.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
import re
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

log = logging.getLogger("vggts_ros.config")

_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


@dataclass(frozen=True)
class Param:
    """What one setting means (see the module docstring).

    ``doc``: one line (the ROS descriptor's description and the YAML comment);
    ``details``: more prose for the parameter reference page. ``range``: inclusive
    ``(low, high)``, either end ``None`` for open; list values are checked element by
    element. ``choices``: the allowed values; ``pattern``: ``(regex, how to write it)``
    also accepted (e.g. ``cuda:<index>``). ``live``: the running node applies a change
    at once (else it is read-only). ``renamed_to``/``value_map``: a deprecated spelling,
    mapped once onto its new name (``value_map``: old value -> new value, ``None`` = the
    old value asked for nothing)."""

    doc: str
    range: Optional[Tuple[Any, Any]] = None
    choices: Optional[Tuple[Any, ...]] = None
    pattern: Optional[Tuple[str, str]] = None
    live: bool = False
    details: str = ""
    renamed_to: str = ""
    value_map: Optional[Mapping[Any, Any]] = None

    def summary(self) -> str:
        """The doc with the allowed values, as ``ros2 param describe`` and the YAML show it."""
        if self.renamed_to:
            return f"deprecated: use {self.renamed_to}"
        if self.choices is None:
            return self.doc
        allowed = [str(c) for c in self.choices] + ([self.pattern[1]] if self.pattern else [])
        return f"{self.doc} [{' | '.join(allowed)}]"

    def errors(self, name: str, value: Any) -> List[str]:
        """Messages for a value outside the choices or the range (empty when it fits)."""
        if self.renamed_to:
            return []
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        out: List[str] = []
        if self.choices is not None:
            for item in items:
                if item in self.choices or (self.pattern and isinstance(item, str)
                                            and re.fullmatch(self.pattern[0], item)):
                    continue
                extra = f" or {self.pattern[1]}" if self.pattern else ""
                out.append(f"{name}: {item!r} is not one of {self.choices}{extra}")
        if self.range is not None:
            lo, hi = self.range
            bad = [v for v in items if isinstance(v, numbers.Real) and not (
                (lo is None or v >= lo) and (hi is None or v <= hi))]
            if bad:
                if lo is not None and hi is not None:
                    rule = f"in [{lo}, {hi}]"
                else:
                    rule = f">= {lo}" if lo is not None else f"<= {hi}"
                subject = f"{name} values" if isinstance(value, (list, tuple)) else name
                out.append(f"{subject} must be {rule}, got {value}")
        return out


def param(default: Any = MISSING, *, doc: str, range: Optional[Tuple[Any, Any]] = None,
          choices: Optional[Sequence[Any]] = None, pattern: Optional[Tuple[str, str]] = None,
          live: bool = False, details: str = "", renamed_to: str = "",
          value_map: Optional[Mapping[Any, Any]] = None,
          default_factory: Any = MISSING) -> Any:
    """A dataclass field carrying a :class:`Param` (``field.metadata["param"]``).

    Mutable defaults (lists) go in ``default_factory``; a tuple default needs none."""
    spec = Param(doc=doc, range=tuple(range) if range is not None else None,
                 choices=tuple(choices) if choices is not None else None, pattern=pattern, live=live,
                 details=details, renamed_to=renamed_to, value_map=dict(value_map) if value_map else None)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"param": spec})


def spec_of(f: dataclasses.Field) -> Optional[Param]:
    """The :class:`Param` of a field, or None for a field without one."""
    return f.metadata.get("param")


@functools.lru_cache(maxsize=None)
def type_hints(cls) -> Dict[str, Any]:
    """Resolved annotations of a dataclass (the modules use ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


# ---------------------------------------------------------------------------------------
# coercion
# ---------------------------------------------------------------------------------------
def _is_sequence(value: Any) -> bool:
    return not isinstance(value, (str, bytes, Mapping)) and hasattr(value, "__iter__") and hasattr(value, "__len__")


def _number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a number or a numeric string, else None (bools are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _fixed(origin: Any, args: Tuple[Any, ...]) -> bool:
    """A fixed-length tuple annotation (``Tuple[int, int]``, not ``Tuple[int, ...]``)."""
    return origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)


def coerce(value: Any, annotation: Any, name: str) -> Any:
    """``value`` converted to ``annotation`` by the rules of the module docstring; a
    ValueError naming ``name`` and the value when it does not fit."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return coerce(value, rest[0], name) if len(rest) == 1 else value
    if value is None and origin in (list, tuple) and not _fixed(origin, args):
        return [] if origin is list else ()  # ROS reads an empty YAML list as "not set"
    if value is None:
        raise ValueError(f"{name}: a value is required, got null")
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        return from_dict(annotation, value, name)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if annotation is int:
        number = _number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return int(number)
    if annotation is float:
        number = _number(value)
        if number is None:
            raise ValueError(f"{name}: expected a number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return value
    if origin in (list, tuple):
        fixed = _fixed(origin, args)
        items = list(value) if _is_sequence(value) else None
        if items is None:
            if fixed:
                raise ValueError(f"{name}: expected a list of {len(args)} values, got {value!r}")
            items = [value]
        if fixed:
            if len(items) != len(args):
                raise ValueError(f"{name}: expected a list of {len(args)} values, got {value!r}")
            return tuple(coerce(v, t, f"{name}[{i}]") for i, (v, t) in enumerate(zip(items, args)))
        elem = args[0] if args else Any
        out = [coerce(v, elem, f"{name}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    return value


def from_dict(cls, data: Optional[Mapping[str, Any]], name: Optional[str] = None):
    """Build dataclass ``cls`` from a (possibly nested) mapping, refusing unknown keys and
    converting every value by its field's annotation (errors are named ``<name>.<key>``)."""
    name = cls.__name__ if name is None else name
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise ValueError(f"{name or cls.__name__}: unknown key(s) {unknown}; known: {sorted(known)}")
    hints = type_hints(cls)
    return cls(**{k: coerce(v, hints[k], _join(name, k)) for k, v in data.items()})


def to_dict(obj: Any) -> Dict[str, Any]:
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------------------
# walking a configuration tree
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One parameter of a dataclass tree: its dotted ``name``, :class:`Param`, annotation
    and default value."""

    name: str
    spec: Param
    annotation: Any
    default: Any


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_section(annotation: Any) -> bool:
    return dataclasses.is_dataclass(annotation) and isinstance(annotation, type)


def parameters(cls, prefix: str = "", skip: Sequence[str] = ()) -> Dict[str, Entry]:
    """Every field with a :class:`Param` in the tree of ``cls``, by dotted name, in
    declaration order; fields whose type is a dataclass are sections (walked into).
    ``skip``: top-level field names left out."""
    out: Dict[str, Entry] = {}
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        name = _join(prefix, f.name)
        if _is_section(hints[f.name]):
            out.update(parameters(hints[f.name], name))
        elif spec_of(f) is not None:
            out[name] = Entry(name, spec_of(f), hints[f.name], field_default(f))
    return out


def flatten(obj: Any, prefix: str = "", skip: Sequence[str] = ()) -> Dict[str, Any]:
    """The values of :func:`parameters` of ``obj`` (an instance), by dotted name."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(flatten(value, _join(prefix, f.name)))
        elif spec_of(f) is not None:
            out[_join(prefix, f.name)] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"a.b.c": 1}`` -> ``{"a": {"b": {"c": 1}}}``."""
    tree: Dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def field_errors(obj: Any, prefix: str = "") -> List[str]:
    """Range and choice violations of every field with a :class:`Param` in ``obj``'s tree."""
    errors: List[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = _join(prefix, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            errors += field_errors(value, name)
        elif spec_of(f) is not None:
            errors += spec_of(f).errors(name, value)
    return errors


def check(obj: Any, prefix: str, what: str) -> Any:
    """Raise one ValueError listing every :func:`field_errors` of ``obj``; return ``obj``."""
    errors = field_errors(obj, prefix)
    if errors:
        raise ValueError(f"invalid {what}:\n  " + "\n  ".join(errors))
    return obj


# ---------------------------------------------------------------------------------------
# deprecated spellings
# ---------------------------------------------------------------------------------------
def renamed_value(old: str, value: Any, new: str, current: Any, default: Any,
                  value_map: Mapping[Any, Any]) -> Any:
    """The value of ``new`` once the deprecated ``old`` was given as ``value``.

    Logs a warning naming the new spelling. ``value_map[value]`` None: the old value
    asked for nothing, ``current`` stays. A mapped value that contradicts a ``current``
    other than ``default`` is an error naming both."""
    if value not in value_map:
        raise ValueError(f"{old}: {value!r} is not one of {tuple(value_map)} ({old} is deprecated: use {new})")
    mapped = value_map[value]
    if mapped is None:
        log.warning("%s is deprecated: use %s (%s: %s changes nothing)", old, new, old, value)
        return current
    if current != default and current != mapped:
        raise ValueError(f"{old}: {value} (deprecated, means {new}: {mapped}) contradicts {new}: {current}; "
                         f"give {new} only")
    log.warning("%s is deprecated: use %s (%s: %s is %s: %s)", old, new, old, value, new, mapped)
    return mapped


def fold_renamed(root: Any, label: str = "") -> None:
    """Map every deprecated field of ``root``'s tree that was given (differs from its
    default) onto its ``renamed_to`` (a dotted path from ``root``), once: the old field
    is reset to its default. ``label`` prefixes the names in messages."""
    for entry in parameters(type(root)).values():
        spec = entry.spec
        if not spec.renamed_to:
            continue
        *parents, leaf = entry.name.split(".")
        owner = functools.reduce(getattr, parents, root)
        value = getattr(owner, leaf)
        if value == entry.default:
            continue
        *new_parents, new_leaf = spec.renamed_to.split(".")
        target = functools.reduce(getattr, new_parents, root)
        new_default = parameters(type(root))[spec.renamed_to].default
        setattr(target, new_leaf, renamed_value(label + entry.name, value, label + spec.renamed_to,
                                                getattr(target, new_leaf), new_default, spec.value_map or {}))
        setattr(owner, leaf, entry.default)


# ---------------------------------------------------------------------------------------
# name=value overrides
# ---------------------------------------------------------------------------------------
def parse_assignments(items: Sequence[str]) -> List[Tuple[str, Any]]:
    """``["optim.lr=1e-4", "model.geometric.tilts=[1, 2]"]`` -> ``[(name, value)]``, values
    read as YAML (numbers, lists, true/false, null); an item without ``=`` is an error."""
    import yaml

    out = []
    for item in items:
        name, sep, raw = str(item).partition("=")
        if not sep or not name.strip():
            raise ValueError(f"override {item!r}: expected name=value (e.g. optim.lr=1e-4)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({exc.problem})") from None
        out.append((name.strip(), value))
    return out


def assign(data: Dict[str, Any], items: Sequence[str],
           empty: Optional[Mapping[str, Callable[[], Dict[str, Any]]]] = None) -> Dict[str, Any]:
    """Apply ``section.key=value`` overrides to the nested dict form ``data`` (changed in
    place and returned). A name must reach an existing key; ``empty[section]`` supplies
    the dict of a section that is None (an optional section being switched on)."""
    empty = empty or {}
    for (name, value), item in zip(parse_assignments(items), items):
        *parents, key = name.split(".")
        if not parents:
            raise ValueError(f"override {item!r}: expected section.key=value (e.g. optim.lr=1e-4)")
        node = data
        for depth, part in enumerate(parents):
            if node.get(part) is None and part in empty and depth == 0:
                node[part] = empty[part]()
            if not isinstance(node.get(part), dict):
                raise ValueError(f"override {item!r}: unknown section {'.'.join(parents[:depth + 1])!r}")
            node = node[part]
        if key not in node:
            raise ValueError(f"override {item!r}: {'.'.join(parents)} has no key {key!r}; known: {sorted(node)}")
        node[key] = value
    return data
