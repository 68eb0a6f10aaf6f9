"""Property-based tests of the deterministic archive.

Any tree of files gives a byte-identical `.tar.gz` whatever order the files
were created and listed in, their timestamps and the umask; extracting it
gives back every file's bytes, with mode 0755 for executables and 0644 for
the rest, and nothing else (no owners, no times).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flyte_build.archives import tar_gz as archive

pytestmark = pytest.mark.reliability("archive properties (hypothesis)")

# names: a few path segments from an alphabet with the awkward characters
# (unicode, spaces, dots inside names); never "", "." or ".."
segment = st.text(alphabet="abcXYZ_-. é中", min_size=1, max_size=8).filter(lambda s: s.strip(".") != "" and s.strip() == s)
path = st.lists(segment, min_size=1, max_size=3).map("/".join)
file_ = st.tuples(st.binary(max_size=2048), st.booleans())  # (content, executable)


def _consistent(tree: dict[str, tuple[bytes, bool]]) -> bool:
    """No name is both a file and a directory of another name."""
    names = set(tree)
    return not any("/".join(n.split("/")[:i]) in names for n in names for i in range(1, n.count("/") + 1))


trees = st.dictionaries(path, file_, min_size=1, max_size=12).filter(_consistent)


def _materialise(root: Path, tree: dict, order: list[str], mtime: float, umask: int) -> list[tuple[str, str, str]]:
    old = os.umask(umask)
    try:
        for name in order:
            content, executable = tree[name]
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            os.chmod(p, (0o755 if executable else 0o644) & ~umask)
            os.utime(p, (mtime, mtime))
    finally:
        os.umask(old)
    return [(n, str(root / n), hashlib.sha256(tree[n][0]).hexdigest()) for n in order]


def _archive(members) -> bytes:
    buf = io.BytesIO()
    archive.write_tar_gz(buf, members)
    return buf.getvalue()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(tree=trees, data=st.data())
def test_same_tree_same_bytes_whatever_order_time_and_umask(tree, data):
    order1 = list(tree)
    order2 = data.draw(st.permutations(order1))
    t1, t2 = data.draw(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)))
    u1, u2 = data.draw(st.tuples(st.sampled_from([0o022, 0o077, 0o002, 0o027]), st.sampled_from([0o022, 0o077, 0o002, 0o027])))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        m1 = _materialise(Path(a), tree, order1, t1, u1)
        m2 = _materialise(Path(b), tree, order2, t2, u2)
        # also list the members in the other order than they were created
        assert _archive(m1) == _archive(list(reversed(m2)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(tree=trees)
def test_round_trip_preserves_content_and_modes(tree):
    with tempfile.TemporaryDirectory() as a:
        blob = _archive(_materialise(Path(a), tree, list(tree), 1_700_000_000, 0o022))
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        got = {}
        dirs = set()
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
            assert not m.name.startswith("/") and ".." not in m.name.split("/")
            if m.isdir():
                assert m.mode == 0o755
                dirs.add(m.name.rstrip("/"))
            else:
                assert m.isfile()
                got[m.name] = (tar.extractfile(m).read(), m.mode)
    assert set(got) == set(tree)
    for name, (content, executable) in tree.items():
        assert got[name] == (content, 0o755 if executable else 0o644)
    expected_dirs = {"/".join(n.split("/")[:i]) for n in tree for i in range(1, n.count("/") + 1)}
    assert dirs == expected_dirs


@given(name=st.sampled_from(["", "/abs", "a/../b", "./a", "a//b", "..", "a\\b"]))
def test_unsafe_member_names_are_refused(name):
    with pytest.raises(ValueError):
        archive.check_name(name)
