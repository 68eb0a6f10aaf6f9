"""The compiled code discovery's parent hands its child (flyte_build/discovery/code.py),
and the import records read from compiled code (imports.records_from_code) that let
the parent compile instead of parse: both must give exactly what the old path gave."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from flyte_build.discovery import code as discovery_code, imports
from flyte_build.discovery.code_prints import code_print
from flyte_build.stores.file_digests import FileDigests

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]


def _compiled(source: str):
    data = source.encode()
    return imports.records_from_code(compile(data, "/m.py", "exec", dont_inherit=True), data)


def test_records_from_code_equal_the_parse_wherever_given():
    # flyte-build's own tree, the sample monorepo and a slice of the standard library:
    # every answer equals the parse's, and most files get one
    files = [p for d in ("flyte_build", "rules", "sample_monorepo", "bench", "tests") for p in (REPO / d).rglob("*.py")]
    files += sorted(Path(os.__file__).parent.glob("*.py"))[:300]
    answered = 0
    for path in files:
        data = path.read_bytes()
        try:
            code = compile(data, str(path), "exec", dont_inherit=True)
        except SyntaxError:
            continue
        got = imports.records_from_code(code, data)
        if got is not None:
            answered += 1
            assert got == imports.parse_imports(data, str(path)), path
    assert answered > len(files) // 2


@pytest.mark.parametrize("source", [
    "if 0:\n    import dead\n",  # dropped by the compiler, kept by the parse
    "def f():\n    return 1\n    import after_return\n",
    "import a  # import b\n",  # the word elsewhere: no proof nothing was dropped
    "x = 'import'\nimport a\n",
    "import importlib\nimportlib.import_module('x')\n",  # a call: the parse's to find
])
def test_records_from_code_leave_doubtful_sources_to_the_parse(source):
    assert _compiled(source) is None


def test_records_from_code_read_every_form_of_import():
    source = ("from __future__ import annotations\nimport a, b.c as d\nfrom . import x, y\nfrom ..p import *\n"
              "try:\n    pass\nfinally:\n    import fin\nclass K:\n    def f(self):\n        from q.r import s\n")
    assert _compiled(source) == imports.parse_imports(source.encode()) == [
        (0, "__future__", ("annotations",)), (0, "a", ()), (0, "b.c", ()), (0, "fin", ()),
        (0, "q.r", ("s",)), (1, "", ("x", "y")), (2, "p", ())]


def _prefetched(tmp_path: Path, files: dict[str, str]) -> tuple[Path, str, FileDigests]:
    root = tmp_path / "root"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    stream = str(tmp_path / "code")
    open(stream, "wb").close()
    digests = FileDigests(None, "test")
    discovery_code.prefetch(root, sorted(files), digests, stream)
    return root, stream, digests


def test_the_child_takes_the_parents_code_only_for_the_same_bytes_and_path(tmp_path):
    root, stream, digests = _prefetched(tmp_path, {"pkg/__init__.py": "", "pkg/m.py": "import os\nX = 1\n"})
    path = os.path.join(os.path.realpath(root), "pkg/m.py")
    data = Path(path).read_bytes()
    fresh = compile(data, path, "exec", dont_inherit=True)
    handed = discovery_code.Handed(stream, os.path.realpath(root))
    assert handed.take(path, b"X = 2\n", -1) is None  # other bytes: compiled afresh
    got = discovery_code.Handed(stream, os.path.realpath(root)).take(path, data, -1)
    assert got is not None and got[0] == fresh and got[1] == code_print(fresh)
    assert discovery_code.Handed(stream, os.path.realpath(root)).take(path, data, 1) is None  # optimised: not ours
    assert discovery_code.Handed(stream, os.path.realpath(root)).take(path + "x", data, -1) is None
    # the records the closures use were kept as the parse gives them
    hex_ = digests.digest(str(root / "pkg/m.py"))[0]
    assert digests.parsed(hex_) == [[0, "os", ()]]


def test_a_frame_still_being_written_is_waited_for_not_misread(tmp_path):
    root, stream, _ = _prefetched(tmp_path, {"m.py": "Y = 3\n"})
    whole = Path(stream).read_bytes()
    Path(stream).write_bytes(whole[:-5])
    path = os.path.join(os.path.realpath(root), "m.py")
    handed = discovery_code.Handed(stream, os.path.realpath(root))
    assert handed.take(path, b"Y = 3\n", -1) is None  # incomplete: the child compiles it itself
    with open(stream, "ab") as f:
        f.write(whole[-5:])
    assert handed.take(path, b"Y = 3\n", -1) is not None


def test_code_that_warns_when_compiled_is_left_to_the_child(tmp_path):
    # a module run earlier may have turned warnings into errors: the child must compile it itself
    root, stream, digests = _prefetched(tmp_path, {"w.py": "x = 1\nif x is 1:\n    pass\n"})
    path = os.path.join(os.path.realpath(root), "w.py")
    assert discovery_code.Handed(stream, os.path.realpath(root)).take(path, Path(path).read_bytes(), -1) is None
    assert digests.parsed(digests.digest(str(root / "w.py"))[0]) == []
    assert sys.flags.optimize == 0
