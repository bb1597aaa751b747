"""Atomic saves, marked output directories and bounded JSON reads (phenogen.fsio)."""

from __future__ import annotations

import json

import pytest

from phenogen.errors import InputError
from phenogen.fsio import (
    MARKER,
    atomic_write_json,
    check_output_dir,
    complete_dir,
    prepare_output_dir,
    read_json,
    replace_dir,
)


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})
    assert json.loads(target.read_text()) == {"x": 2}


def test_replace_dir_keeps_a_complete_copy_at_every_step(tmp_path):
    final = tmp_path / "state"
    for value in ("1", "2"):
        tmp = tmp_path / "state.tmp"
        tmp.mkdir()
        (tmp / "v").write_text(value)
        replace_dir(tmp, final)
    assert (final / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    # a kill between the two renames: only state.old and a half-written state.tmp remain
    final.rename(tmp_path / "state.old")
    (tmp_path / "state.tmp").mkdir()
    assert complete_dir(final) == tmp_path / "state.old"
    (tmp_path / "state.old").rename(final)
    assert complete_dir(final) == final


def test_force_never_deletes_a_directory_phenogen_did_not_write(tmp_path):
    important = tmp_path / "important"
    important.mkdir()
    (important / "thesis.docx").write_text("years of work")
    with pytest.raises(InputError, match="not written by phenogen"):
        check_output_dir(important, force=True)
    with pytest.raises(InputError, match="not written by phenogen"):
        prepare_output_dir(important, "train-image", force=True)
    assert (important / "thesis.docx").read_text() == "years of work"

    run = prepare_output_dir(tmp_path / "run", "train-image")
    assert (run / MARKER).is_file()
    (run / "model").mkdir()
    with pytest.raises(InputError, match="--force"):
        check_output_dir(run)
    prepare_output_dir(run, "train-image", force=True)
    assert sorted(p.name for p in run.iterdir()) == [MARKER]
    with pytest.raises(InputError, match="is a file"):
        check_output_dir(run / MARKER)
    with pytest.raises(InputError, match="is a file, not a directory"):
        check_output_dir(run / MARKER / "sub" / "run")
    with pytest.raises(InputError, match="contradict"):
        check_output_dir(run, force=True, resume=True)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"1", "must hold an object"),
        (b"[]", "must hold an object"),
        (b"{", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'{"a":' * 70 + b"1" + b"}" * 70, "nested deeper"),
    ],
)
def test_read_json_refuses_every_broken_file_with_one_error(tmp_path, content, match):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        read_json(path, "metrics")
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match="is a directory"):
        read_json(tmp_path, "metrics")
