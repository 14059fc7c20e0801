"""Plain dicts (from Jsonnet) -> frozen dataclasses, with errors naming the key and what was expected."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, ClassVar, Literal, Mapping, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong kind."""


def require(condition: bool, where: str, expected: str, value: Any) -> None:
    """Raise a :class:`ConfigError` saying what ``where`` should be unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")


def build(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from a mapping, checking every key against the field annotations.

    Lists become tuples (the dataclasses are frozen). Unknown keys, missing required keys and
    values of the wrong type raise :class:`ConfigError` naming ``where.key``.
    """
    if isinstance(data, cls):
        return data
    require(isinstance(data, Mapping), where, "a mapping", data)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(sorted(fields))}"
        )
    missing = [
        name
        for name, field in fields.items()
        if name not in data
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: _coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()})


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a (simple) type annotation; return it with lists turned into tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_describe(annotation)}, got {value!r}")
    if origin is Literal:
        require(value in args, where, f"one of {', '.join(map(repr, args))}", value)
        return value
    if origin is tuple:
        require(isinstance(value, (list, tuple)), where, f"a list of {_describe(args[0])}", value)
        return tuple(_coerce(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        require(isinstance(value, Mapping), where, "a mapping", value)
        return {_coerce(k, args[0], where): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is type(None):
        require(value is None, where, "null", value)
        return None
    if annotation is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool), where, "a number", value)
        return float(value)
    if annotation is int:
        require(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
        return value
    if annotation in (bool, str):
        require(isinstance(value, annotation), where, f"a {annotation.__name__}", value)
        return value
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")


# Which sources a rule applies to: a list of source names, "*" for all, or None for the rule's default.
Selector = Union[str, tuple[str, ...], None]


def check_selector(selector: Selector, where: str) -> None:
    if isinstance(selector, str):
        require(selector == "*", where, "'*', a list of source names or null", selector)


def selects(selector: Selector, source: str, default: Callable[[str], bool]) -> bool:
    if selector is None:
        return default(source)
    return selector == "*" or source in selector


def not_code(source: str) -> bool:
    """The default selection of prose rules: every source without "code" in its name."""
    return "code" not in source


@dataclasses.dataclass(frozen=True)
class TaggerSection:
    """What every tagger's section of the tag config has: a switch and the sources it tags.

    ``sources`` is a list of source names, ``"*"`` for all, or null for the tagger's default
    (:meth:`applies_by_default`: sources without "code" in their name unless a tagger says otherwise).
    """

    section: ClassVar[str]
    enabled: bool = True
    sources: Selector = None

    def __post_init__(self) -> None:
        check_selector(self.sources, f"tag.{self.section}.sources")

    @staticmethod
    def applies_by_default(source: str) -> bool:
        return not_code(source)

    def applies(self, source: str) -> bool:
        return self.enabled and selects(self.sources, source, self.applies_by_default)


@dataclasses.dataclass(frozen=True)
class RuleSection:
    """What every tagger's section of the filter config has: a switch for its rules. The rules
    apply to the documents the tagger tagged; their thresholds are the section's other fields."""

    section: ClassVar[str]
    enabled: bool = True


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(annotation))
    if origin is Literal:
        return " or ".join(map(repr, typing.get_args(annotation)))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(annotation)[0])}"
    if origin is dict:
        return "a mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))
