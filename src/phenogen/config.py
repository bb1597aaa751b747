"""Typed configuration: dataclass sections, TOML files, ``--set section.key=value`` overrides.

Every command owns one or more *sections* (``[sim]``, ``[lm]``, ``[image]`` …), each a dataclass
whose fields carry a ``help`` string in their metadata and whose ``__post_init__`` validates values.
A single TOML file may hold the sections of several commands (the demo uses one file for all);
a command reads the sections it knows and ignores the rest. Overrides are parsed as TOML values,
so ``--set lm.lr=3e-4``, ``--set sim.n_living=30`` and ``--set image.encoder="kmer"`` all work
(bare words that are not valid TOML are taken as strings).

Every value is checked against its field's type, and bad input of any kind — a file that is not
UTF-8 or not TOML, a section that is not a table, an unknown key, a string where a number belongs,
``true`` where an integer belongs, nesting deeper than :data:`MAX_DEPTH`, an integer beyond 64 bits,
a float that is ``nan`` or infinite (``1e400`` overflows to ``inf``) — is one
:class:`~phenogen.errors.ConfigError` naming the file or ``--set`` text, the section and the key.
A float field that may be infinite says so with ``metadata={"allow_inf": True}``; ``nan`` never is.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     n: int = 3
>>> load_sections({"demo": Demo}, overrides=["demo.n=5"])["demo"].n
5
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from phenogen.errors import ConfigError
from phenogen.fsio import atomic_write_text, read_text

__all__ = [
    "load_sections",
    "section_from_dict",
    "to_jsonable",
    "save_resolved",
    "parse_override",
    "merge_to_toml",
    "require_finite",
    "MAX_CONFIG_BYTES",
    "MAX_OVERRIDE_CHARS",
    "MAX_DEPTH",
]

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""Largest TOML config file read (real ones are a few kilobytes)."""
MAX_OVERRIDE_CHARS = 100_000
"""Longest ``--set`` text."""
MAX_DEPTH = 16
"""Deepest nesting of lists and tables inside one value (no field needs more than 2)."""
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # every int knob ends in numpy / torch, which hold 64 bits


def _show(value: Any, limit: int = 60) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters, so that every message stays one short line."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr (beyond Python's int-str limit)
        return f"an integer of about {value.bit_length() * 0.30103:,.0f} digits"
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def _section(name: str) -> str:
    """A section name for a message: as is when short and printable, else cut and quoted."""
    return name if len(name) <= 40 and name.isprintable() else _show(name, 40)


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when lists/tables inside ``value`` nest deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)
    return False


def _bracket_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in TOML text outside strings and comments (a lexical over-estimate:
    ``[[table]]`` headers count 2)."""
    depth = best = 0
    quote = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "[{":
            depth += 1
            best = max(best, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return best


def _loads(text: str, where: str, is_file: bool = False) -> dict[str, Any]:
    """``tomllib.loads`` whose every failure but a syntax error is one :class:`ConfigError` for ``where``.

    A syntax error (``TOMLDecodeError``) is re-raised for the caller to word; an integer longer than
    Python's int-string limit (a plain ``ValueError`` from tomllib) and nesting that exhausts the
    stack (``RecursionError``) are refused here, as is nesting deeper than :data:`MAX_DEPTH`.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        # how deep nesting fails inside tomllib depends on the interpreter's recursion limit (which other
        # libraries raise): a syntax error there is still the nesting, and is worded as such
        if _bracket_depth(text) > MAX_DEPTH + 2:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
        raise
    except RecursionError:
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        digits = next((m for m in re.finditer(r"[0-9_]+", text) if len(m.group()) > 4000), None)
        line = f", line {text.count(chr(10), 0, digits.start()) + 1}" if digits and is_file else ""
        raise ConfigError(
            f"{where}{line}: integer with too many digits ({exc.args[0].split(':')[0]})"
        ) from None
    if _too_deep(doc, MAX_DEPTH + 1):  # +1: the section table itself
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    return doc


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into its parts; the value is parsed as TOML when possible.

    The text must be one line of valid Unicode of at most :data:`MAX_OVERRIDE_CHARS` characters.
    """
    if not isinstance(text, str):
        raise ConfigError(f"--set {_show(text)}: expected text section.key=value")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"--set {_show(text)}: longer than {MAX_OVERRIDE_CHARS:,} characters")
    bad = re.search(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]", text)
    if bad:
        raise ConfigError(
            f"--set {_show(text)}: control character or undecodable byte {bad.group()!r} at "
            f"position {bad.start() + 1}; a --set value is one line of text"
        )
    if "=" not in text:
        raise ConfigError(f"--set {_show(text)}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {_show(text)}: the key must be section.key (e.g. sim.n_living=48)")
    try:
        value = _loads(f"v = {raw.strip()}", f"--set {_show(text)}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts[0], parts[1], value


def _coerce(value: Any, tp: Any, where: str, allow_inf: bool = False) -> Any:
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
                return _coerce(value, arg, where, allow_inf)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) or value not in allowed:
            raise ConfigError(f"{where}: {_show(value)} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{where}[{i}]", allow_inf)
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]", allow_inf) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_show(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_show(value)}")
        return section_from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        if not INT_MIN <= value <= INT_MAX:
            raise ConfigError(f"{where}: integer {_show(value)} does not fit in 64 bits")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {_show(value)} is too large for a floating-point number") from None
        return _finite(number, where, allow_inf, ConfigError)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        if "\x00" in value:
            raise ConfigError(f"{where}: the string holds a NUL character")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {_show(value)}")
        if "\x00" in str(value):
            raise ConfigError(f"{where}: the path holds a NUL character")
        return Path(value)
    return value


def _finite(number: float, where: str, allow_inf: bool, error: type[Exception]) -> float:
    """``number`` unless it is nan, or infinite where ``allow_inf`` is false (then ``error``)."""
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise error(
            f"{where}: {number} is not a finite number (a value beyond ±1.8e308 overflows to inf)"
            if math.isinf(number)
            else f"{where}: nan is not a number"
        )
    return number


def require_finite(obj: Any) -> None:
    """Raise ``ValueError`` when a float field of dataclass ``obj`` (or an element of a list/tuple field)
    is nan, or infinite without ``metadata={"allow_inf": True}``, or a seed field is negative.

    Called first by the ``__post_init__`` of every config section, so that comparisons such as
    ``lr <= 0`` (false for nan) cannot let a non-number through, whoever builds the section.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name, None)
        allow_inf = bool(f.metadata.get("allow_inf", False))
        for i, v in enumerate(value if isinstance(value, list | tuple) else (value,)):
            if isinstance(v, float):
                where = f.name if not isinstance(value, list | tuple) else f"{f.name}[{i}]"
                _finite(v, where, allow_inf, ValueError)
        # numpy and torch refuse negative seeds deep inside a run: refuse them here, by name
        if (f.name == "seed" or f.name.endswith("_seed")) and isinstance(value, int) and value < 0:
            raise ValueError(f"{f.name} must be >= 0, got {value}")


@functools.cache
def _schema(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """(type hints, init fields by name) of dataclass ``cls``; cached: get_type_hints evaluates strings."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def section_from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and wrong types."""
    name = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table, got {_show(data)}")
    hints, fields = _schema(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        shown = ", ".join(k if k.isidentifier() and len(k) <= 40 else _show(k, 40) for k in unknown[:10])
        more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise ConfigError(f"[{name}] unknown key(s) {shown}{more}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {
        k: _coerce(v, hints[k], f"{where}.{k}" if where else k, fields[k].metadata.get("allow_inf", False))
        for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, ArithmeticError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"[{name}] {message[:300]}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file; missing, over-size, non-UTF-8, invalid or too deep is a :class:`ConfigError`."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = read_text(path, "config file", max_bytes=MAX_CONFIG_BYTES, error=ConfigError)
    try:
        return _loads(text, f"config file {path}", is_file=True)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_sections(
    specs: dict[str, type],
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Resolve the config sections a command uses: defaults ← TOML file ← ``--set`` overrides."""
    raw: dict[str, dict[str, Any]] = {name: {} for name in specs}
    origin: dict[tuple[str, str], str] = {}  # (section, key) -> where the value came from
    if config_file is not None:
        path = Path(config_file)
        doc = _read_toml(path)
        for name in specs:
            table = doc.get(name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"config file {path}: [{name}] must be a table, got {_show(table)}")
            raw[name].update(table)
            origin.update(dict.fromkeys(((name, k) for k in table), f"config file {path}"))
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in specs:
            raise ConfigError(
                f"--set {_show(text)}: this command has no [{_section(section)}] section; "
                f"it uses {', '.join(sorted(specs))}"
            )
        raw[section][key] = value
        origin[section, key] = f"--set {_show(text)}"
    for name, cls in specs.items():  # name the file or --set text of a bad value
        hints, fields = _schema(cls)
        for key, value in raw[name].items():
            try:
                if key not in fields:
                    section_from_dict(cls, {key: value}, name)  # words the unknown-key error
                _coerce(value, hints[key], f"{name}.{key}", fields[key].metadata.get("allow_inf", False))
            except ConfigError as exc:
                raise ConfigError(f"{origin[name, key]}: {exc}") from None
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
    if isinstance(obj, datetime.date | datetime.time):  # TOML dates and times
        return obj.isoformat()
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def save_resolved(
    configs: dict[str, Any], out_dir: str | Path, name: str = "config.json", **extra: Any
) -> Path:
    """Write the resolved configuration (plus ``extra`` facts such as the command line) as JSON."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        **{k: to_jsonable(v) for k, v in configs.items()},
        **{k: to_jsonable(v) for k, v in extra.items()},
    }
    return atomic_write_text(out / name, json.dumps(payload, indent=2, sort_keys=False) + "\n")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"cannot write {_show(text)} to TOML: it is not valid Unicode") from None
    # JSON's escapes are TOML's, but not its surrogate pairs (hence ensure_ascii=False) nor a raw DEL
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # inf and nan are TOML too
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise ConfigError(f"cannot write {_show(value)} to TOML")


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
        table = doc.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {_show(text)}: [{_section(section)}] is not a table in {config_file}")
        table[key] = value
    lines = []
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[{_section(section)}] must be a table, got {_show(table)}")
        lines.append(f"[{_toml_key(section)}]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
