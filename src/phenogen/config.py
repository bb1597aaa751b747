"""Typed configuration: dataclass sections, TOML files, ``--set section.key=value`` overrides.

Every command owns one or more *sections* (``[sim]``, ``[lm]``, ``[image]`` …), each a dataclass
whose fields carry a ``help`` string in their metadata and whose ``__post_init__`` validates values.
A single TOML file may hold the sections of several commands (the demo uses one file for all);
a command reads the sections it knows and ignores the rest. Overrides are parsed as TOML values,
so ``--set lm.lr=3e-4``, ``--set sim.n_living=30`` and ``--set image.encoder="kmer"`` all work
(bare words that are not valid TOML are taken as strings).

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     n: int = 3
>>> load_sections({"demo": Demo}, overrides=["demo.n=5"])["demo"].n
5
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from phenogen.errors import ConfigError

__all__ = [
    "load_sections",
    "section_from_dict",
    "to_jsonable",
    "save_resolved",
    "parse_override",
    "merge_to_toml",
]


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into its parts; the value is parsed as TOML when possible."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: the key must be section.key (e.g. sim.n_living=48)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts[0], parts[1], value


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert) ``value`` to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return section_from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value


def section_from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"[{where or cls.__name__}] unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[{where or cls.__name__}] {exc}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_sections(
    specs: dict[str, type],
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Resolve the config sections a command uses: defaults ← TOML file ← ``--set`` overrides."""
    raw: dict[str, dict[str, Any]] = {name: {} for name in specs}
    if config_file is not None:
        path = Path(config_file)
        doc = _read_toml(path)
        for name in specs:
            table = doc.get(name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"config file {path}: [{name}] must be a table")
            raw[name].update(table)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in specs:
            raise ConfigError(
                f"--set {text!r}: this command has no [{section}] section; it uses {', '.join(sorted(specs))}"
            )
        raw[section][key] = value
    return {name: section_from_dict(cls, raw[name], name) for name, cls in specs.items()}


def to_jsonable(obj: Any) -> Any:
    """Plain-JSON view of dataclasses, paths, tuples and numpy scalars."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def save_resolved(
    configs: dict[str, Any], out_dir: str | Path, name: str = "config.json", **extra: Any
) -> Path:
    """Write the resolved configuration (plus ``extra`` facts such as the command line) as JSON."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    payload = {
        **{k: to_jsonable(v) for k, v in configs.items()},
        **{k: to_jsonable(v) for k, v in extra.items()},
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def merge_to_toml(config_file: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """One TOML document: ``config_file``'s tables with ``--set`` overrides applied (any section).

    Used by the demo so that every stage reads the same, fully resolved file.
    """
    doc: dict[str, dict[str, Any]] = {}
    if config_file is not None:
        path = Path(config_file)
        doc = _read_toml(path)
    for text in overrides:
        section, key, value = parse_override(text)
        doc.setdefault(section, {})[key] = value
    lines = []
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
