"""Unit tests of the walk (ignores, symlinks, secrets) and of import closures."""

from __future__ import annotations

import os
from pathlib import Path

from flyte_build.archives import bundle_files as files
from flyte_build.discovery import imports


def _tree(root: Path, spec: dict[str, str]) -> None:
    for name, text in spec.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_walk_applies_gitignore_flyteignore_and_standard_ignores(tmp_path):
    _tree(tmp_path, {
        ".gitignore": "*.log\nbuild/\n",
        ".flyteignore": "notebooks/\n",
        "a.py": "", "a.log": "", "build/x.py": "", "notebooks/n.ipynb": "",
        "pkg/.gitignore": "!keep.log\n", "pkg/keep.log": "", "pkg/drop.log": "",
        "pkg/__pycache__/m.cpython-311.pyc": "", ".git/config": "", ".venv/lib/site.py": "",
    })
    fs = files.walk(tmp_path)
    assert sorted(fs.files) == [".flyteignore", ".gitignore", "a.py", "pkg/.gitignore", "pkg/keep.log"]


def test_secrets_are_left_out_with_a_warning_unless_allowed(tmp_path):
    _tree(tmp_path, {".env": "K=1", "certs/server.pem": "x", "home/id_rsa": "x", "ok.py": "", ".env.example": ""})
    fs = files.walk(tmp_path)
    assert sorted(fs.files) == [".env.example", "ok.py"]
    assert any(".env: looks like a secret" in w for w in fs.warnings)
    allowed = files.walk(tmp_path, allow_secrets=("certs/*.pem",))
    assert "certs/server.pem" in allowed.files and ".env" not in allowed.files


def test_symlinks_out_of_root_and_loops_are_not_followed(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    _tree(root, {"a.py": ""})
    _tree(outside, {"secret.txt": "s"})
    os.symlink(outside / "secret.txt", root / "leak.txt")
    os.symlink(outside, root / "leakdir")
    os.symlink(root, root / "loop")
    os.symlink(root / "a.py", root / "alias.py")
    fs = files.walk(root)
    assert sorted(fs.files) == ["a.py", "alias.py"]
    assert any("leak.txt: symlink leads outside the root" in w for w in fs.warnings)


def test_closure_follows_lazy_relative_and_dynamic_imports(tmp_path):
    _tree(tmp_path, {
        "app/__init__.py": "",
        "app/main.py": "from . import util\nfrom .sub import deep\n\ndef task():\n    import app.lazy\n    import importlib\n    importlib.import_module('app.dyn')\n",
        "app/util.py": "import os, json\n",
        "app/sub/__init__.py": "",
        "app/sub/deep.py": "from ..util import *\n",
        "app/lazy.py": "from libs import shared\n",
        "app/dyn.py": "",
        "app/unused.py": "",
        "libs/shared.py": "",
    })
    resolver = imports.Resolver(tmp_path, [tmp_path])

    def records(path):
        return imports.parse_imports(Path(path).read_bytes(), path)

    paths, errors = imports.closure([str(tmp_path / "app/main.py")], resolver, records)
    rel = sorted(os.path.relpath(p, tmp_path) for p in paths)
    assert errors == []
    assert rel == ["app/__init__.py", "app/dyn.py", "app/lazy.py", "app/main.py", "app/sub/__init__.py",
                   "app/sub/deep.py", "app/util.py", "libs/shared.py"]


def test_closure_reports_syntax_errors_with_line(tmp_path):
    _tree(tmp_path, {"m.py": "import bad\n", "bad.py": "x = (\n"})
    resolver = imports.Resolver(tmp_path, [tmp_path])
    _, errors = imports.closure([str(tmp_path / "m.py")], resolver, lambda p: imports.parse_imports(Path(p).read_bytes(), p))
    assert len(errors) == 1 and errors[0][0].endswith("bad.py") and errors[0][1].startswith("line 1")
