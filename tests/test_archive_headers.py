"""Archive member headers: the ustar blocks `archives.tar_gz` fills in from a
template are, byte for byte, what this Python's tarfile writes for the same
member (bundle bytes, and so their digests and keys, stand on it)."""

from __future__ import annotations

import tarfile

import pytest

from flyte_build.archives import tar_gz

NAMES = ["a", "pkg/mod.py", "x" * 99, "y" * 100, "z" * 101, "d/" * 49 + "f", "caf\u00e9.py", "sp ace/t\tab.py",
         "n\u00e4me/" + "w" * 98, "UPPER/Mixed-Case_1.PY", "a/" * 60 + "deep.py", "bad\udcffbyte.py"]
SIZES = [0, 1, 511, 512, 513, 10_000_000, 8 ** 11 - 1, 8 ** 11, 2 ** 40]


@pytest.mark.timeout(60)
def test_headers_are_tarfiles_own_bytes():
    tar_gz._HEADERS.clear()
    plain = 0
    for name in NAMES:
        for executable in (False, True):
            for size in SIZES:
                got = tar_gz.file_header(name, size, executable)
                assert got == tar_gz._tarfile_header(name, False, size, executable), (name, size, executable)
                plain += tar_gz._plain_header(name, False, size, executable) is not None
        d = name.rstrip("/") + "/"
        assert tar_gz.dir_header(d) == tar_gz._tarfile_header(d, True, 0, False), d
    assert plain >= 50  # the template path was taken, not only tarfile's


@pytest.mark.timeout(60)
def test_a_header_reads_back_as_the_member_it_describes(tmp_path):
    block = tar_gz.file_header("pkg/run.sh", 1234, True)
    info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")  # checks the checksum too
    assert (info.name, info.size, info.mode, info.mtime, info.uid, info.type) == ("pkg/run.sh", 1234, 0o755, 0, 0, tarfile.REGTYPE)
