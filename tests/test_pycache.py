"""Bytecode compiled ahead of the discovery child: used only when it was
compiled from the very source the child reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flyte_build import config as config_mod
from flyte_build import pycache
from flyte_build.discovery import Selection, discover
from flyte_build.statcache import FileDigests
from flyte_build.store import LocalStore

MODULE = "import flyte\n\nenv = flyte.TaskEnvironment(name='{name}')\n\n\n@env.task\nasync def t() -> int:\n    return 1\n"


def test_bytecode_is_loaded_only_for_its_own_source(tmp_path):
    src = b"x = 1\n"
    pycache.write(str(tmp_path), "m.py", src, compile(src, "m.py", "exec"))
    assert pycache.fresh(str(tmp_path), "m.py", src)
    assert pycache.load(str(tmp_path), "m.py", src) is not None
    assert pycache.load(str(tmp_path), "m.py", b"x = 2\n") is None  # same size, other bytes
    (tmp_path / "m.pyc").write_bytes((tmp_path / "m.pyc").read_bytes()[:20])  # torn
    assert pycache.load(str(tmp_path), "m.py", src) is None


@pytest.mark.timeout(240)
def test_discovery_never_runs_stale_bytecode(tmp_path):
    root = tmp_path / "repo"
    (root / "svc").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '0'\n")
    (root / "svc" / "__init__.py").write_text("")
    mod = root / "svc" / "tasks.py"
    mod.write_text(MODULE.format(name="alpha"))
    cache = tmp_path / "cache"

    def run():
        cfg = config_mod.load(root)
        store = LocalStore(cache)
        digests = FileDigests(store.root / "state", str(cfg.root))
        try:
            return discover(cfg, Selection(), store, digests, use_cache=False)
        finally:
            digests.save()

    assert [e.name for e in run().envs] == ["alpha"]
    (pyc,) = Path(cache, "pyc").rglob("tasks.pyc")  # compiled by the parent for the child
    # an edit that keeps the size and the mtime: the source hash still tells
    st = mod.stat()
    mod.write_text(MODULE.format(name="bravo"))
    os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [e.name for e in run().envs] == ["bravo"]
    assert pyc.exists()
