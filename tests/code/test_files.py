"""Atomic writes: whole files, through links, with the umask's mode, no leftovers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from tagifai.files import STALE_TEMPORARY_SECONDS, write_bytes_atomic, write_json_atomic


@pytest.fixture
def umask() -> Iterator[None]:
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_a_link_is_written_through_not_replaced(tmp_path):
    target = tmp_path / "real" / "out.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    write_json_atomic(link, {"a": 1})
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert json.loads(target.read_text()) == {"a": 1}


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mask, mode):
    os.umask(mask)
    path = tmp_path / "x.bin"
    write_bytes_atomic(path, b"x")
    assert path.stat().st_mode & 0o777 == mode


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path):
    path = tmp_path / "best.json"
    old = tmp_path / ".best.json.abc123.tmp"  # what a killed writer leaves
    fresh = tmp_path / ".best.json.def456.tmp"  # a writer that may still be at it
    other = tmp_path / ".other.json.abc123.tmp"  # another file's
    for leftover in (old, fresh, other):
        leftover.write_text("half")
    past = time.time() - STALE_TEMPORARY_SECONDS - 60
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    write_json_atomic(path, [1])
    assert not old.exists()
    assert fresh.exists() and other.exists()
    assert json.loads(path.read_text()) == [1]
