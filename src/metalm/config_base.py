"""Base class of every typed configuration section, and the helpers that describe and report them.

Sections are pydantic models that reject unknown keys and coerce nothing silently (strict types;
an int is accepted where a float is expected). Feature modules define their own section next to
their code (e.g. `metalm.meta.config.MetaConfig`) and `metalm.config` composes them. Each field's
`description` is its one-line documentation: `metalm train --help` lists it, and the command-line
flags of the evaluations are generated from it (`metalm.evaluation.settings`).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticUndefined


class Section(BaseModel):
    """A configuration section: unknown keys, wrong types and non-finite floats (`.inf`, `.nan`) are
    errors naming the key."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, frozen=False,
                              allow_inf_nan=False)


def _section_type(annotation: Any) -> type[Section] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def type_name(annotation: Any) -> str:
    """A short human form of a field's type: `int`, `float | None`, `cosine|linear|constant`, `list[str]`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def field_default(field) -> Any:
    """A field's default value (calling its default factory); PydanticUndefined when required."""
    if field.default_factory is not None:
        return field.default_factory()
    return field.default


def iter_fields(model_cls: type[Section], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, pydantic FieldInfo) of every leaf field, walking nested sections recursively."""
    for name, field in model_cls.model_fields.items():
        sub = _section_type(field.annotation)
        if sub is not None:
            yield from iter_fields(sub, f"{prefix}{name}.")
        else:
            yield prefix + name, field


def known_keys(model_cls: type[Section], prefix: str = "") -> list[str]:
    return [key for key, _ in iter_fields(model_cls, prefix)]


def show_value(value: Any) -> str:
    """A default as it is written in YAML: null, true, [a, b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return str(value)


def describe_fields(model_cls: type[Section], prefix: str = "") -> str:
    """One line per key: `key  type = default  description` (descriptions may be missing)."""
    rows = []
    for key, field in iter_fields(model_cls, prefix):
        default = field_default(field)
        shown = "(required)" if default is PydanticUndefined else f"= {show_value(default)}"
        rows.append((key, f"{type_name(field.annotation)} {shown}", field.description or ""))
    width_key = max(len(r[0]) for r in rows)
    width_type = min(32, max(len(r[1]) for r in rows))
    return "\n".join(f"  {k:<{width_key}}  {t:<{width_type}}  {d}".rstrip() for k, t, d in rows)


def format_validation_error(exc: ValidationError, model_cls: type[Section], prefix: str = "",
                            name: Callable[[str], str] | None = None) -> str:
    """One line naming the offending key (`prefix` + its dotted location, shown through `name`), with a
    suggestion for a misspelt key."""
    err = exc.errors()[0]
    loc = (prefix + ".".join(str(p) for p in err["loc"])).rstrip(".")
    show = name or (lambda key: key)
    if err["type"] == "extra_forbidden":
        suggestion = difflib.get_close_matches(loc, known_keys(model_cls, prefix), n=1)
        hint = f" (did you mean {show(suggestion[0])!r}?)" if suggestion else ""
        return f"unknown config key {show(loc)!r}{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if isinstance(value, dict) or err["type"] == "value_error" else f" (got {value!r})"
    return f"{show(loc)}: {msg}{shown}" if loc else f"{msg}{shown}"


# ----------------------------------------------------------------------------- command-line flags


def cli(required: bool = False, flags: tuple[str, ...] = (), comma: bool = False) -> dict[str, Any]:
    """`json_schema_extra` of a field whose generated flag differs from the default: required on the
    command line, other flag names (the first is the main one), a list given comma-separated."""
    return {"cli": {"required": required, "flags": list(flags), "comma": comma}}


def _cli_extra(field) -> dict[str, Any]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("cli", {"required": False, "flags": [], "comma": False})


def flag_name(name: str, model_cls: type[Section]) -> str:
    field = model_cls.model_fields.get(name)
    flags = _cli_extra(field)["flags"] if field is not None else []
    return flags[0] if flags else "--" + name.replace("_", "-")


def _scalar(annotation: Any) -> tuple[Any, list | None, bool]:
    """(argparse type, choices, is a list) of a field type, None stripped."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _scalar(args[0])
    if typing.get_origin(annotation) is Literal:
        return type(args[0]), list(args), False
    if typing.get_origin(annotation) is list:
        return _scalar(args[0])[0], _scalar(args[0])[1], True
    return annotation, None, False


def add_section_arguments(parser, model_cls: type[Section]) -> None:
    """One flag per field of `model_cls`: its name (`--n-way`), type, choices, default and description."""
    import argparse

    for name, field in model_cls.model_fields.items():
        extra = _cli_extra(field)
        kind, choices, many = _scalar(field.annotation)
        default = field_default(field)
        help_text = field.description or ""
        if default is not None and not extra["required"]:
            help_text += f" (default: {show_value(default)})"
        flags = extra["flags"] or ["--" + name.replace("_", "-")]
        options: dict[str, Any] = {"dest": name, "help": help_text, "required": extra["required"]}
        if kind is bool and not many:
            options.update(action=argparse.BooleanOptionalAction, default=default)
        elif many:
            options.update(action="append", type=str if extra["comma"] else kind, choices=choices, default=None,
                           metavar=name.upper().rstrip("S") if extra["comma"] else None)
        else:
            options.update(type=kind, choices=choices, default=default, metavar=None if choices else name.upper())
        parser.add_argument(*flags, **options)


_S = TypeVar("_S", bound=Section)


def section_from_arguments(model_cls: type[_S], args) -> _S:
    """The validated section from parsed flags (`add_section_arguments`); ConfigError naming the flag."""
    from .errors import ConfigError

    values = {}
    for name, field in model_cls.model_fields.items():
        value = getattr(args, name)
        if value is None:
            continue  # not given: the field's default
        if _cli_extra(field)["comma"]:
            value = [part for item in value for part in item.split(",") if part]
        values[name] = value
    try:
        return model_cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model_cls, name=lambda key: flag_name(key.split(".")[0], model_cls))) from None
