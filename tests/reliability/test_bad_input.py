"""Bad input: each gets one clear message naming the file, key or cycle,
exit 2 (1 for a failed build), no traceback, and nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import flyte_build
from tests.support.repos import Cli, cache_files, env_module, make_repo

pytestmark = pytest.mark.reliability("bad input")

GOOD = {"pkg/__init__.py": "", "pkg/a.py": env_module("a", var="env_a")}


def repo(tmp_path: Path, files: dict, extra: str = "") -> Cli:
    root = make_repo(tmp_path / "repo", {**GOOD, **files}, pyproject_extra=extra)
    return Cli(root, tmp_path / "cache")


def assert_nothing_stored(cli: Cli) -> None:
    assert cache_files(cli.cache_dir) == [], "a failed run left entries in the content or action store"


def test_syntax_error_names_file_and_line(tmp_path):
    cli = repo(tmp_path, {"pkg/b.py": "import flyte\n\ndef broken(:\n    pass\n"})
    res = cli.build()
    res.assert_clean_error(2, "pkg/b.py:3", "SyntaxError")
    assert_nothing_stored(cli)


def test_import_error_names_module_and_missing_name(tmp_path):
    cli = repo(tmp_path, {"pkg/b.py": "import flyte\nimport no_such_module_xyz\n"})
    res = cli.build()
    res.assert_clean_error(2, "pkg.b", "ModuleNotFoundError", "no_such_module_xyz")
    assert_nothing_stored(cli)


def test_exception_at_import_time_names_file_line_and_exception(tmp_path):
    cli = repo(tmp_path, {"pkg/b.py": "import flyte\n\nraise RuntimeError('boom at import')\n"})
    res = cli.build()
    res.assert_clean_error(2, "pkg.b", "pkg/b.py:3", "RuntimeError: boom at import")
    assert_nothing_stored(cli)


def test_sys_exit_at_import_time_is_a_load_error(tmp_path):
    # a `__main__.py` is a module like any other: `flyte deploy --recursive` imports it too
    cli = repo(tmp_path, {"pkg/b.py": "import sys\nsys.exit(3)\n", "tool/__main__.py": "raise SystemExit(2)\n"})
    cli.build().assert_clean_error(2, "pkg.b", "SystemExit: 3", 'if __name__ == "__main__":', "--ignore-load-errors, -i,")
    skipped = cli.run("targets", "-i")
    assert skipped.rc == 0 and "tool.__main__" in skipped.err and "SystemExit: 2" in skipped.err, skipped.describe()


def test_unknown_env_variable_lists_the_ones_there(tmp_path):
    cli = repo(tmp_path, {})
    # `targets FILE VAR` selects as `flyte deploy FILE VAR` does; the message
    # names the file, the variable asked for and the ones that exist
    cli.run("targets", "pkg/a.py", "env_nope").assert_clean_error(2, "pkg/a.py", "env_nope", "env_a")
    assert_nothing_stored(cli)


def test_duplicate_env_names_name_both_files(tmp_path):
    cli = repo(tmp_path, {"pkg/b.py": env_module("a", var="env_b")})
    res = cli.build()
    res.assert_clean_error(2, "two environments are named `a`", "pkg/a.py", "pkg/b.py")
    assert_nothing_stored(cli)


CYCLE_OF_ONE = {"pkg/a.py": env_module("a", var="env_a", body="env_a.depends_on.append(env_a)")}
CYCLE_OF_TWO = {
    "pkg/b.py": env_module("b", var="env_b", depends_on=("pkg.a:env_a",), body="env_a.depends_on.append(env_b)"),
}
CYCLE_OF_THREE = {
    "pkg/b.py": env_module("b", var="env_b", depends_on=("pkg.a:env_a",)),
    "pkg/c.py": env_module("c", var="env_c", depends_on=("pkg.b:env_b",), body="from pkg.a import env_a\nenv_a.depends_on.append(env_c)"),
}


@pytest.mark.parametrize(
    "files,cycle",
    [(CYCLE_OF_ONE, "a → a"), (CYCLE_OF_TWO, "a → b → a"), (CYCLE_OF_THREE, "a → c → b → a")],
    ids=["one", "two", "three"],
)
def test_depends_on_cycle_is_named_in_order(tmp_path, files, cycle):
    cli = repo(tmp_path, files)
    for args in (("build", "--json"), ("graph",), ("targets",)):
        cli.run(*args).assert_clean_error(2, f"depends_on cycle: {cycle}")
    assert_nothing_stored(cli)


@pytest.mark.parametrize(
    "extra,pieces",
    [
        ("bogus-key = 1", ["tool.hatch.build.targets.flyte.bogus-key", "valid fields", "copy-style"]),
        ('copy-style = "everything"', ["tool.hatch.build.targets.flyte.copy-style", "loaded_modules, all, none"]),
        ("jobs = 0", ["tool.hatch.build.targets.flyte.jobs", "positive integer"]),
        ('allow-secrets = ".env"', ["tool.hatch.build.targets.flyte.allow-secrets", "array of strings"]),
        ("[tool.hatch.build.targets.flyte.envs.a]\nflavour = 1", ["tool.hatch.build.targets.flyte.envs.a.flavour", "copy-style, include"]),
        ('root-dir = "nowhere"', ["root-dir", "not a directory"]),
        ("copy-style = ", ["invalid TOML", "pyproject.toml"]),
    ],
    ids=["unknown-key", "bad-copy-style", "jobs-zero", "string-not-array", "unknown-env-key", "missing-root-dir", "invalid-toml"],
)
def test_invalid_config_names_the_field(tmp_path, extra, pieces):
    cli = repo(tmp_path, {}, extra=extra)
    res = cli.build()
    res.assert_clean_error(2, *pieces)
    assert_nothing_stored(cli)


def test_bad_copy_style_flag_is_a_usage_error(tmp_path):
    cli = repo(tmp_path, {})
    res = cli.run("--copy-style", "some", "build")
    assert res.rc == 2 and "Traceback" not in res.err and "--copy-style" in res.err, res.describe()


def test_unreadable_file_is_named(tmp_path):
    cli = repo(tmp_path, {"data/secretless.txt": "hello\n"})
    target = cli.cwd / "data/secretless.txt"
    target.chmod(0)
    try:
        res = cli.run("--copy-style", "all", "build", "--json", drop_root_read=True)
    finally:
        target.chmod(0o644)
    res.assert_clean_error(2, "data/secretless.txt", "cannot read", "Permission denied")
    assert_nothing_stored(cli)


def test_unreadable_module_is_a_load_error(tmp_path):
    cli = repo(tmp_path, {"pkg/b.py": "X = 1\n"})
    target = cli.cwd / "pkg/b.py"
    target.chmod(0)
    try:
        res = cli.run("build", "--json", drop_root_read=True)
    finally:
        target.chmod(0o644)
    res.assert_clean_error(2, "pkg.b", "PermissionError")


def test_non_utf8_file_name_is_named_and_can_be_ignored(tmp_path):
    cli = repo(tmp_path, {})
    bad = os.path.join(os.fsencode(cli.cwd), b"data", b"caf\xe9.txt")
    os.makedirs(os.path.dirname(bad))
    with open(bad, "wb") as f:
        f.write(b"x")
    res = cli.run("--copy-style", "all", "build", "--json")
    res.assert_clean_error(2, "data/caf\\xe9.txt", "not valid UTF-8", ".flyteignore")
    assert_nothing_stored(cli)
    # the named way out works: ignore it and the build goes on
    (cli.cwd / ".flyteignore").write_text("data/caf*\n")
    cli.run("--copy-style", "all", "build", "--json").assert_ok()


def test_non_utf8_module_name_does_not_crash_loaded_modules(tmp_path):
    cli = repo(tmp_path, {})
    bad = os.path.join(os.fsencode(cli.cwd), b"pkg", b"mod\xff.py")
    with open(bad, "wb") as f:
        f.write(b"X = 1\n")
    res = cli.build()
    res.assert_clean_error(2, "pkg/mod\\xff.py", "not valid UTF-8")


def test_very_large_file_streams(tmp_path):
    """A 256 MiB (sparse) file: the build succeeds without holding it in memory."""
    cli = repo(tmp_path, {})
    big = cli.cwd / "data" / "big.bin"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.truncate(256 << 20)
    run = flyte_build("--copy-style", "all", "build", "--json", cwd=cli.cwd, cache=cli.cache_dir,
                      wrapper=("/usr/bin/time", "-f", "maxrss_kb=%M"))
    run.assert_ok()
    rss_kb = int(run.err.rsplit("maxrss_kb=", 1)[1].split()[0])
    assert rss_kb < 160 * 1024, f"peak RSS {rss_kb} KiB: the build read the whole file into memory"
    assert cli.verify().rc == 0


def test_empty_repo_says_so(tmp_path):
    root = make_repo(tmp_path / "repo", {})
    cli = Cli(root, tmp_path / "cache")
    cli.run("build").assert_clean_error(2, "no TaskEnvironment found under", str(root))
    assert_nothing_stored(cli)
    cli.run("build", "bundle:*").assert_clean_error(2, "no TaskEnvironment found under")


def test_repo_without_pyproject(tmp_path):
    """Outside any project nothing is imported (a stray script would run): exit 2
    saying so; naming the root with --root-dir builds it."""
    root = tmp_path / "bare"
    root.mkdir()
    (root / "a.py").write_text(env_module("bare"))
    (root / "stray.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    cli = Cli(root, tmp_path / "cache")
    cli.build().assert_clean_error(2, "no pyproject.toml", "--root-dir")
    assert not (tmp_path / "ran").exists()
    res = cli.run("--root-dir", str(root), "build", "--json")
    res.assert_ok()
    assert list(res.digests()) == ["bundle:bare"]


def test_copy_style_none_without_version(tmp_path):
    cli = repo(tmp_path, {})
    cli.run("--copy-style", "none", "deploy", "--dry-run").assert_clean_error(2, "`a`", "copy style none", "--version")
    ok = cli.run("--copy-style", "none", "deploy", "--dry-run", "--version", "v1")
    assert ok.rc == 0 and "Traceback" not in ok.err, ok.describe()
