"""Typed config sections: TOML files, --set overrides, validation, resolved JSON."""

import datetime
import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Literal

import pytest

from phenogen.config import (
    load_sections,
    merge_to_toml,
    parse_override,
    require_finite,
    save_resolved,
    section_from_dict,
)
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


# ------------------------------------------------------------------ hostile inputs (issue 22)
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("s.rate=1e400", "s.rate: inf is not a finite number"),  # overflows to inf
        ("s.rate=nan", "s.rate: nan is not a number"),
        ("s.rate=-inf", "s.rate: -inf is not a finite number"),
        ("s.limit=nan", "s.limit: nan is not a number"),  # float | None
        ("s.rate=" + "9" * 400, "too large for a floating-point number"),  # int -> float overflow
        ("s.n=" + "9" * 5000, "integer with too many digits"),  # Python's int-str limit
        ("s.n=" + str(2**63), "does not fit in 64 bits"),
        ("s.sizes=" + "[" * 2000 + "]" * 2000, "nested more than 16 levels deep"),  # RecursionError
        ("s.sizes=" + "[" * 20 + "]" * 20, "nested more than 16 levels deep"),
        ("s.name=a\nb", "control character"),
        ("s.name=\udcff", "undecodable byte"),  # a non-UTF-8 byte of the command line
        ('s.name="a\\u0000b"', "NUL character"),
        ("s.n=true", "expected an integer, got True"),
        ("s.mode=true", "True is not one of"),
        ("s.n=1979-05-27", "expected an integer, got datetime.date(1979, 5, 27)"),
        ("s." + "k" * 100 + "=1", "characters); valid keys: flag"),  # long names are cut
    ],
)
def test_hostile_overrides_are_config_errors(override, message):
    with pytest.raises(ConfigError) as info:
        load_sections({"s": Section}, None, [override])
    text = str(info.value)
    assert message in text and text.startswith("--set ") and "\n" not in text and len(text) < 400, text


def test_hostile_config_files_name_the_file_and_the_key(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cases = [
        (b"[s]\nrate = 1e400\n", "c.toml: s.rate: inf is not a finite number"),
        (b"[s]\nrate = nan\n", "c.toml: s.rate: nan is not a number"),
        (b"[s]\nn = " + b"9" * 5000 + b"\n", "c.toml, line 2: integer with too many digits"),
        (b"a = " + b"[" * 2000 + b"]" * 2000 + b"\n", "c.toml: nested more than 16 levels deep"),
        (b"a = " + b"{b = " * 2000 + b"}" * 2000 + b"\n", "c.toml: nested more than 16 levels deep"),
        (b"[s]\nname = '\xff'\n", "c.toml: config file is not UTF-8 text (byte 12"),
        (b"s = 3\n", "c.toml: [s] must be a table, got 3"),
        (b"[s]\nnope = 1\n", "c.toml: [s] unknown key(s) nope"),
        (b"[s]\nn = '7'\n", "c.toml: s.n: expected an integer, got '7'"),
        (b"[s]\nflag = 1\n", "c.toml: s.flag: expected true or false, got 1"),
        (b"[s]\nn = 1.0\n", "c.toml: s.n: expected an integer, got 1.0"),
        (b"\x89PNG\r\n\x1a\n", "not UTF-8"),
    ]
    for content, message in cases:
        cfg.write_bytes(content)
        with pytest.raises(ConfigError) as info:
            load_sections({"s": Section}, cfg)
        assert message in str(info.value) and "\n" not in str(info.value), (content[:40], str(info.value))
    monkeypatch.setattr("phenogen.config.MAX_CONFIG_BYTES", 100)
    cfg.write_text("[s]\n" + "# padding\n" * 20)
    with pytest.raises(ConfigError, match="more than the 100 allowed"):
        load_sections({"s": Section}, cfg)


def test_nan_and_inf_are_refused_by_every_section_itself():
    """``lr <= 0`` is false for nan: each section's __post_init__ refuses non-finite floats first."""
    from phenogen.diffusion.config import ImageConfig
    from phenogen.evaluate.config import EvaluateConfig
    from phenogen.lm.config import LMConfig, SampleConfig
    from phenogen.sim.config import SimConfig

    nan, inf = float("nan"), float("inf")
    for build, field_name in [
        (lambda: LMConfig(lr=nan), "lr"),
        (lambda: SimConfig(tree_height=nan), "tree_height"),
        (lambda: SimConfig(kappa=inf), "kappa"),
        (lambda: SimConfig(codon_position_rates=(1.0, nan, 1.0)), "codon_position_rates[1]"),
        (lambda: SampleConfig(top_p=nan), "top_p"),
        (lambda: ImageConfig(lr=nan), "lr"),
        (lambda: EvaluateConfig(probe_lr=inf), "probe_lr"),
    ]:
        with pytest.raises(ValueError, match=f"^{re.escape(field_name)}: "):
            build()
    with pytest.raises(ConfigError, match=r"lm.lr: nan is not a number"):
        section_from_dict(LMConfig, {"lr": nan}, "lm")


@dataclass
class Unbounded:
    timeout: float = field(default=1.0, metadata={"allow_inf": True})
    rate: float = 1.0

    def __post_init__(self):
        require_finite(self)


def test_a_field_may_allow_inf_but_never_nan():
    assert load_sections({"u": Unbounded}, None, ["u.timeout=inf"])["u"].timeout == float("inf")
    assert Unbounded(timeout=float("-inf")).timeout == float("-inf")
    with pytest.raises(ConfigError, match="nan is not a number"):
        load_sections({"u": Unbounded}, None, ["u.timeout=nan"])
    with pytest.raises(ConfigError, match="u.rate: inf is not a finite number"):
        load_sections({"u": Unbounded}, None, ["u.rate=1e999"])


def test_merge_to_toml_round_trips_odd_keys_tables_and_dates(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[s]\n"odd key" = 1\nwhen = 1979-05-27\n[s.sub]\nx = [1, 2]\n["a b"]\ny = "q\\"r"\n')
    merged = merge_to_toml(cfg, ["s.rate=inf"])
    assert tomllib.loads(merged) == {
        "s": {"odd key": 1, "when": datetime.date(1979, 5, 27), "sub": {"x": [1, 2]}, "rate": float("inf")},
        "a b": {"y": 'q"r'},
    }
    cfg.write_text("s = 3\n")
    with pytest.raises(ConfigError, match=r"\[s\] is not a table"):
        merge_to_toml(cfg, ["s.n=1"])


def test_resolved_config_with_a_date_is_plain_json(tmp_path):
    @dataclass
    class Free:
        extra: dict = field(default_factory=dict)

    cfg = tmp_path / "c.toml"
    cfg.write_text("[f.extra]\nwhen = 1979-05-27\n")
    path = save_resolved(load_sections({"f": Free}, cfg), tmp_path / "out")
    assert json.loads(path.read_text())["f"]["extra"]["when"] == "1979-05-27"


def test_deep_nesting_is_named_whatever_the_recursion_limit(tmp_path):
    """tomllib fails deep inline tables as a syntax error, not a RecursionError, once another library has
    raised the interpreter's recursion limit (seen when the phylo tests ran first): still the nesting message."""
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text("a = " + "{b = " * 2000 + "}" * 2000 + "\n")
    old = sys.getrecursionlimit()
    try:
        for limit in (old, 100_000):
            sys.setrecursionlimit(limit)
            with pytest.raises(ConfigError, match="nested more than 16 levels deep"):
                load_sections({"s": Section}, cfg)
    finally:
        sys.setrecursionlimit(old)
    cfg.write_text('[s]\nname = "[[[[[[[[[[[[[[[[[[[[" # {{{{{{{{{{{{{{{{{{{{{{\n')
    # brackets in strings and comments do not count as nesting
    assert load_sections({"s": Section}, cfg)["s"].name == "[" * 20
