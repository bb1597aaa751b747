"""Typed config sections: TOML files, --set overrides, validation, resolved JSON."""

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from phenogen.config import load_sections, merge_to_toml, parse_override, save_resolved
from phenogen.errors import ConfigError


@dataclass
class Section:
    n: int = field(default=3, metadata={"help": "a count"})
    rate: float = 0.5
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    flag: bool = False
    limit: float | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


def test_defaults_file_and_overrides_in_order(tmp_path):
    """Defaults are overridden by the TOML file, which is overridden by --set."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[s]\nn = 7\nname = "file"\n[other]\nx = 1\n')
    out = load_sections({"s": Section}, cfg, ["s.name=cli", "s.rate=2", "s.sizes=[4, 5]", "s.limit=1e-3"])[
        "s"
    ]
    assert (out.n, out.name, out.rate, out.sizes, out.limit) == (7, "cli", 2.0, (4, 5), 1e-3)
    assert isinstance(out.rate, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("s.n=abc", "expected an integer"),
        ("s.n=0", "n must be >= 1"),
        ("s.mode=c", "not one of"),
        ("s.flag=1", "true or false"),
        ("s.nope=1", "unknown key(s) nope"),
        ("t.n=1", "no [t] section"),
        ("s.n", "expected section.key=value"),
        ("n=1", "section.key"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        load_sections({"s": Section}, None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sections({"s": Section}, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[s\nn = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sections({"s": Section}, bad)


def test_bare_word_override_is_a_string():
    assert parse_override("s.name=hello world") == ("s", "name", "hello world")
    assert parse_override('s.name="q"') == ("s", "name", "q")


def test_resolved_config_is_plain_json(tmp_path):
    cfg = load_sections({"s": Section}, None, ["s.n=4"])
    path = save_resolved(cfg, tmp_path, command="test")
    data = json.loads(path.read_text())
    assert data["s"]["n"] == 4 and data["s"]["sizes"] == [1, 2] and data["command"] == "test"


def test_merge_to_toml_applies_overrides_to_any_section(tmp_path):
    """The demo's resolved file: file values, overrides on top, readable back by each command."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[s]\nn = 7\nname = "file"\n')
    merged = tmp_path / "m.toml"
    merged.write_text(merge_to_toml(cfg, ["s.sizes=[3]", "other.x=2.5"]))
    out = load_sections({"s": Section}, merged)["s"]
    assert (out.n, out.name, out.sizes) == (7, "file", (3,))
    assert "[other]\nx = 2.5" in merged.read_text()
