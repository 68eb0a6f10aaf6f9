"""The check of a downloaded bundle (`archives.check.why_not`): the archive
flyte-build makes of the reader's files passes; any other byte anywhere in
its tar stream -- a header, a member's bytes, padding, the end blocks -- is
refused, even when the gzip layer around it is well formed, as are streams
cut short or running on. Members large enough to cross the inflater's chunks
and empty ones are among them."""

from __future__ import annotations

import hashlib
import io
import os
import random
import zlib

import pytest

from flyte_build.archives import check
from flyte_build.archives import tar_gz as archive


def _gzip(stream: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = c.compress(stream) + c.flush()
    return archive.GZIP_HEADER + body + zlib.crc32(stream).to_bytes(4, "little") + len(stream).to_bytes(4, "little")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("members")
    rnd = random.Random(7)
    files = {"pkg/__init__.py": b"", "pkg/a.py": b"x = 1\n" * 100, "pkg/sub/b.py": b"y" * 511,
             "pkg/sub/c.py": b"z" * 512, "big/blob.bin": rnd.randbytes(3 << 20), "big/run.sh": b"#!/bin/sh\n",
             **{f"many/m{i:03d}.py": rnd.randbytes(rnd.randrange(1, 5000)) for i in range(300)}}
    listed, members = [], []
    for i, (name, data) in enumerate(files.items()):
        p = tmp / f"f{i}"
        p.write_bytes(data)
        os.chmod(p, 0o755 if name.endswith(".sh") else 0o644)
        listed.append((name, str(p), None))
        members.append((name, hashlib.sha256(data).hexdigest(), len(data), name.endswith(".sh")))
    out = io.BytesIO()
    archive.write_tar_gz(out, listed)
    blob = out.getvalue()
    stream = zlib.decompressobj(-zlib.MAX_WBITS).decompress(blob[len(archive.GZIP_HEADER):])
    return tmp, blob, stream, members


def _why(tmp, blob: bytes, members) -> str | None:
    p = tmp / "candidate.tar.gz"
    p.write_bytes(blob)
    return check.why_not(p, members)


@pytest.mark.timeout(120)
def test_the_archive_of_these_files_passes_and_any_other_byte_is_refused(bundle):
    tmp, blob, stream, members = bundle
    assert _why(tmp, blob, members) is None
    assert _why(tmp, _gzip(stream), members) is None  # another deflate of the same stream: the same archive
    rnd = random.Random(11)
    # positions in every part of the stream: the first headers, the big member, small members, the end blocks
    spots = [0, 100, 124, 148, 156, 257, 511, 512, 1024, len(stream) - 1, len(stream) - 1024 - 1]
    spots += [rnd.randrange(len(stream)) for _ in range(60)]
    for at in spots:
        bad = bytearray(stream)
        bad[at] ^= 1 << rnd.randrange(8)
        why = _why(tmp, _gzip(bytes(bad)), members)
        assert why is not None, f"a flipped bit at {at} of {len(stream)} passed"


@pytest.mark.timeout(120)
def test_streams_cut_short_or_running_on_are_refused(bundle):
    tmp, blob, stream, members = bundle
    for cut in (512, len(stream) // 2, len(stream) - 512, len(stream) - 1):
        assert _why(tmp, _gzip(stream[:cut]), members) is not None, cut
    assert _why(tmp, _gzip(stream + b"\0" * 512), members) is not None
    assert _why(tmp, blob + b"\0", members) == "data after the gzip member"
    assert _why(tmp, blob[:-3], members) is not None
    assert _why(tmp, blob, members[:-1]) is not None  # a member the inputs do not have
    empty_forged = [(n, "0" * 64 if n == "pkg/__init__.py" else h, s, x) for n, h, s, x in members]
    assert _why(tmp, blob, empty_forged) is not None


HELPER_SCRIPT = r"""
import os, pickle, signal, sys
from flyte_build.archives import check, check_helper

cases, members = pickle.load(open(sys.argv[1], "rb"))
helper = check_helper.start(check.why_not_here)
assert helper is not None, "no helper in a process with one thread"
check.HELPER = helper
got = [check.why_not(p, members) for p in cases]
assert got == [check.why_not_here(p, members) for p in cases], got
assert helper.answered == len(cases), helper.answered
os.kill(helper.pid, signal.SIGKILL)  # a helper gone: the checks go on here, with the same answers
after = [check.why_not(p, members) for p in cases]
assert after == got and not helper.alive, after
helper.stop()
try:
    os.waitpid(-1, os.WNOHANG)
    raise AssertionError("a child is left")
except ChildProcessError:
    pass
print(pickle.dumps(got).hex())
"""


@pytest.mark.timeout(120)
def test_the_helper_process_answers_as_the_check_here(bundle, tmp_path):
    """A build's second process for the checks (`check_helper`) gives the answer
    the check gives in-process, good archive or bad; once it is gone the checks
    run in-process again with the same answers, and it leaves no process."""
    import pickle
    import subprocess
    import sys

    tmp, blob, stream, members = bundle
    bad = bytearray(stream)
    bad[len(stream) // 2] ^= 4
    cases = []
    for i, data in enumerate((blob, _gzip(bytes(bad)), blob + b"\0", blob[:-3])):
        p = tmp_path / f"c{i}.tar.gz"
        p.write_bytes(data)
        cases.append(str(p))
    (tmp_path / "in.pkl").write_bytes(pickle.dumps((cases, members)))
    proc = subprocess.run([sys.executable, "-c", HELPER_SCRIPT, str(tmp_path / "in.pkl")], capture_output=True,
                          text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = pickle.loads(bytes.fromhex(proc.stdout.strip().splitlines()[-1]))
    assert got[0] is None and all(isinstance(g, str) for g in got[1:]), got
