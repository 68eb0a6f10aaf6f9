"""The one atomic-write helper: a real name only ever holds complete bytes,
create-only publishing never replaces what is there, and a failed write
leaves no temporary file behind."""

from __future__ import annotations

import stat

import pytest

from flyte_build import atomic

pytestmark = pytest.mark.timeout(30)


def _leftovers(d):
    return [p.name for p in d.iterdir() if p.name.startswith(atomic.TMP_PREFIX)]


def test_write_and_copy_publish_readable_files(tmp_path):
    dest = tmp_path / "a" / "b" / "blob"
    assert atomic.write_bytes(dest, b"one")
    assert dest.read_bytes() == b"one" and stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert atomic.copy_file(dest, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"one"
    assert atomic.write_bytes(dest, b"two")  # replacing is the default
    assert dest.read_bytes() == b"two"
    assert _leftovers(dest.parent) == [] and _leftovers(tmp_path) == []


def test_create_only_keeps_what_is_there(tmp_path):
    dest = tmp_path / "obj"
    assert atomic.write_bytes(dest, b"first", create_only=True) is True
    assert atomic.write_bytes(dest, b"second", create_only=True) is False
    assert atomic.copy_file(dest, dest.with_name("other"), create_only=True) is True
    assert atomic.copy_file(dest.with_name("other"), dest, create_only=True) is False
    assert dest.read_bytes() == b"first"
    assert _leftovers(tmp_path) == []


def test_a_failed_or_unpublished_write_leaves_nothing(tmp_path):
    dest = tmp_path / "blob"
    with pytest.raises(RuntimeError):
        with atomic.staged(dest) as tmp:
            tmp.path.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    with atomic.staged(dest) as tmp:
        tmp.path.write_bytes(b"does not hash to its name")  # a download the caller refuses
    assert not dest.exists() and _leftovers(tmp_path) == []
