"""While discovery's child runs, the parent resolves the candidates' imports
and deflates their members (`discovery.window`): a cold build whose child
takes long (a module sleeping at import) does that work there, makes no
import lookup afterwards, and ships the same bytes as a build whose child
was quick."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.repos import env_module, make_repo

FILES = {
    "pkg/__init__.py": "",
    "pkg/slow.py": "import os, time\ntime.sleep(float(os.environ.get('SLOW_IMPORT', '0')))\n",
    "pkg/a.py": env_module("a", imports="import pkg.slow\nimport lib.helpers", body="def later():\n    import lib.lazy\n    import lib.extra\n"),
    "lib/__init__.py": "",
    "lib/helpers.py": "from lib import deep\n",
    "lib/deep.py": "X = 1\n" * 200,
    "lib/lazy.py": "Y = 2\n",
}

PROBE = (
    "import json, tarfile\n"
    "from flyte_build.workspace import Settings, Workspace\n"
    "ws = Workspace(Settings())\n"
    "res = ws.build()\n"
    "print(json.dumps({'how': ws.discovery.how, 'digests': {r.target: r.digest for r in res},\n"
    "  'members': {r.target: sorted(m.name for m in tarfile.open(r.path).getmembers()) for r in res},\n"
    "  'ahead': len(ws.discovery.carried_imports.get('files', {})), 'lookups': len(ws.ctx.resolver._memo)}))\n"
)


def _build(root: Path, cache: Path, slow: float) -> dict:
    """A build through the Python API; the import of pkg.slow sleeps `slow` seconds."""
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "FLYTE_BUILD_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1",
                               "SLOW_IMPORT": str(slow)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_work_done_while_the_child_runs_ships_the_same_bytes(tmp_path):
    root = make_repo(tmp_path / "repo", FILES)
    quick = _build(root, tmp_path / "quick", 0)
    slow = _build(root, tmp_path / "slow", 4)
    assert slow["how"] == quick["how"] == "full"
    assert slow["ahead"] >= 5, "nothing was resolved while the child ran"
    assert slow["lookups"] == 0, "the closures resolved imports the window had resolved"
    assert "lib/lazy.py" in slow["members"]["bundle:a"]  # found by resolution alone
    assert slow["digests"] == quick["digests"]
    assert slow["members"] == quick["members"]

    # a module appears where a lazy import looked: the next slow build (the window's
    # resolutions again, beside the kept ones the new file makes stale) ships it
    (root / "lib" / "extra.py").write_text("Z = 3\n")
    again = _build(root, tmp_path / "slow", 4)
    assert "lib/extra.py" in again["members"]["bundle:a"]
    assert again["digests"] == _build(root, tmp_path / "quick-2", 0)["digests"]
