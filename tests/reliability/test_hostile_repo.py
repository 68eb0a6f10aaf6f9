"""A hostile repository: nothing escapes the root, no secret ships by default,
and the cache stays sound even when user code vandalises it.

Bundles are opened and their member names checked, so "nothing escapes"
means the bytes users would deploy, not only the absence of an error.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("hostile repository")

BASE = {"pkg/__init__.py": "", "pkg/a.py": env_module("a", var="env_a")}
OUTSIDE_TEXT = "outside the root: must never ship\n"


def members(result_doc: dict, target: str = "bundle:a") -> dict[str, bytes]:
    rec = next(t for t in result_doc["targets"] if t["target"] == target)
    with tarfile.open(rec["path"], "r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}


@pytest.fixture
def outside(tmp_path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_text(OUTSIDE_TEXT)
    return d


def _cli(tmp_path, files=None, extra="") -> Cli:
    root = make_repo(tmp_path / "repo", {**BASE, **(files or {})}, pyproject_extra=extra)
    return Cli(root, tmp_path / "cache")


def test_symlinks_out_of_the_root_never_ship(tmp_path, outside):
    cli = _cli(tmp_path, extra='copy-style = "all"')
    (cli.cwd / "data").mkdir()
    os.symlink(outside / "secret.txt", cli.cwd / "data" / "file-link.txt")
    os.symlink(outside, cli.cwd / "data" / "dir-link")
    os.symlink("/etc/passwd", cli.cwd / "passwd")
    res = cli.build()
    res.assert_ok()
    names = members(res.json())
    assert not any("file-link" in n or "dir-link" in n or n == "passwd" for n in names), sorted(names)
    assert all(OUTSIDE_TEXT.encode() not in body for body in names.values())
    warnings = "\n".join(res.json()["warnings"])
    assert "data/file-link.txt: symlink leads outside the root" in warnings
    assert "passwd: symlink leads outside the root" in warnings
    for n in names:
        assert not n.startswith("/") and ".." not in n.split("/"), n


def test_symlink_loops_terminate(tmp_path):
    cli = _cli(tmp_path, extra='copy-style = "all"')
    (cli.cwd / "loop").mkdir()
    os.symlink(".", cli.cwd / "loop" / "self")
    os.symlink("..", cli.cwd / "loop" / "parent")
    os.symlink("b", cli.cwd / "loop" / "a")
    os.symlink("a", cli.cwd / "loop" / "b")
    res = cli.run("build", "--json", timeout=60)
    res.assert_ok()
    names = members(res.json())
    assert "pkg/a.py" in names and not any(n.startswith("loop/") and n != "loop/" for n in names), sorted(names)
    assert cli.verify().rc == 0


@pytest.mark.parametrize(
    "entry,piece",
    [("../outside/secret.txt", "leads outside the root"), ("/etc/passwd", "leads outside the root"), ("pkg/../../outside", "leads outside the root")],
    ids=["dotdot", "absolute", "inner-dotdot"],
)
def test_include_entries_outside_the_root_are_refused(tmp_path, outside, entry, piece):
    cli = _cli(tmp_path, extra=f'[tool.hatch.build.targets.flyte.envs.a]\ninclude = ["{entry}"]')
    res = cli.build()
    res.assert_clean_error(2, "`a`", repr(entry), piece)
    assert not (cli.cache_dir / "ac").exists() or not any((cli.cache_dir / "ac").rglob("*.json"))


def test_include_through_a_symlink_out_of_the_root_is_refused(tmp_path, outside):
    cli = _cli(tmp_path, extra='[tool.hatch.build.targets.flyte.envs.a]\ninclude = ["escape"]')
    os.symlink(outside, cli.cwd / "escape")
    cli.build().assert_clean_error(2, "`a`", "'escape'", "resolves outside the root")


def test_flyte_include_outside_the_root_is_refused(tmp_path):
    """TaskEnvironment(include=...) — flyte's own knob — gets the same check."""
    src = env_module("a", var="env_a").replace("name='a'", "name='a', include=('../../etc/passwd',)")
    cli = _cli(tmp_path, {"pkg/a.py": src})
    # flyte resolves it against the declaring file; the message shows where it led
    cli.build().assert_clean_error(2, "`a`", "etc/passwd", "outside the root")


SECRETS = {
    ".env": "API_KEY=hunter2\n",
    "deploy/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    "certs/server.pem": "-----BEGIN CERTIFICATE-----\n",
    "gcp/my-service-account-prod.json": '{"private_key": "x"}\n',
    ".netrc": "machine example.com password x\n",
}


def test_secrets_do_not_ship_by_default(tmp_path):
    cli = _cli(tmp_path, {**SECRETS, ".env.example": "API_KEY=\n"}, extra='copy-style = "all"')
    res = cli.build()
    res.assert_ok()
    names = members(res.json())
    assert not set(SECRETS) & set(names), sorted(names)
    assert ".env.example" in names
    warnings = "\n".join(res.json()["warnings"])
    for s in SECRETS:
        assert f"{s}: looks like a secret" in warnings


def test_allow_secrets_ships_only_what_it_names(tmp_path):
    cli = _cli(tmp_path, SECRETS, extra='copy-style = "all"\nallow-secrets = ["certs/server.pem"]')
    res = cli.build()
    res.assert_ok()
    names = members(res.json())
    assert "certs/server.pem" in names
    assert not (set(SECRETS) - {"certs/server.pem"}) & set(names)


WRITES_UNDER_ROOT = """
import os
_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, "generated.txt"), "w") as _f:
    _f.write("written during discovery\\n")
"""


def test_module_writing_under_the_root_while_discovered(tmp_path):
    """A module that writes a file next to itself at import: the build
    succeeds, is reproducible, and its bundle holds nothing from outside."""
    cli = _cli(tmp_path, {"pkg/a.py": env_module("a", var="env_a", body=WRITES_UNDER_ROOT)}, extra='copy-style = "all"')
    first = cli.build()
    first.assert_ok()
    assert (cli.cwd / "pkg" / "generated.txt").exists()
    again = cli.build()
    again.assert_ok()
    assert again.digests() == first.digests()
    assert cli.verify().rc == 0


VANDAL = """
import os
# user code runs with the user's environment, FLYTE_BUILD_CACHE_DIR included:
# garble every blob, truncate every action entry, poison discovery results
_cache = os.environ.get("FLYTE_BUILD_CACHE_DIR")
if _cache and os.environ.get("VANDALISE") == "1":
    for _dirpath, _dirs, _files in os.walk(_cache):
        for _name in _files:
            _p = os.path.join(_dirpath, _name)
            if "/cas/" in _p:
                with open(_p, "r+b") as _f:
                    _f.write(b"\\x00garbled\\x00")
            elif "/ac/" in _p:
                open(_p, "w").close()
    os.makedirs(os.path.join(_cache, "cas", "sha256"), exist_ok=True)
    with open(os.path.join(_cache, "cas", "sha256", "zz"), "w") as _f:
        _f.write("not a directory")
"""


def test_module_vandalising_the_cache_while_discovered(tmp_path):
    cli = _cli(tmp_path, {"pkg/b.py": env_module("b", var="env_b"), "pkg/vandal.py": VANDAL})
    first = cli.build()
    first.assert_ok()
    reference = first.digests()
    # force re-discovery (a new file) with the vandal armed
    (cli.cwd / "pkg" / "c.py").write_text("X = 1\n")
    armed = Cli(cli.cwd, cli.cache_dir, env={"VANDALISE": "1"})
    res = armed.build()
    res.assert_ok()
    assert res.digests() == reference, "a vandalised entry was served"
    assert all(not t["cached"] for t in res.json()["targets"]), "a vandalised entry was served as a hit"
    ver = cli.verify()
    assert "Traceback" not in ver.err and "internal error" not in ver.err, ver.describe()
    assert ver.json()["ok"], ver.describe()
    again = cli.build()
    again.assert_ok()
    assert again.digests() == reference
