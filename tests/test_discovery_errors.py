"""Bad input gets one clear message, exit 2, no traceback, and leaves the cache sound."""

from __future__ import annotations

from pathlib import Path


from tests.support.cli import flyte_build




def _fails(repo: Path, cache: Path, *args: str) -> str:
    run = flyte_build(*(args or ("build",)), cwd=repo, cache=cache)
    assert run.rc == 2, (run.rc, run.out, run.err)
    assert "Traceback" not in run.err
    assert flyte_build("cache", "verify", cwd=repo, cache=cache).rc == 0
    return run.err


def test_syntax_error_names_file_and_line(repo, tmp_path):
    (repo / "services/preprocessing/broken.py").write_text("x = 1\ndef f(:\n    pass\n")
    err = _fails(repo, tmp_path / "c")
    assert "services/preprocessing/broken.py:2" in err and "SyntaxError" in err


def test_failing_import_names_module_and_exception(repo, tmp_path):
    (repo / "services/preprocessing/needs.py").write_text("import no_such_package_here\n")
    err = _fails(repo, tmp_path / "c")
    assert "services.preprocessing.needs" in err and "ModuleNotFoundError" in err and "no_such_package_here" in err


def test_exception_at_import_time(repo, tmp_path):
    (repo / "services/preprocessing/boom.py").write_text("raise RuntimeError('config missing')\n")
    err = _fails(repo, tmp_path / "c")
    assert "RuntimeError: config missing" in err and "services/preprocessing/boom.py:1" in err


def test_ignore_load_errors_goes_on_and_reports(repo, tmp_path):
    (repo / "services/preprocessing/needs.py").write_text("import no_such_package_here\n")
    run = flyte_build("build", "--ignore-load-errors", "--json", cwd=repo, cache=tmp_path / "c")
    assert run.rc == 0
    doc = run.json()
    assert len(doc["targets"]) == 6
    assert any("services/preprocessing/needs.py" in w and "ModuleNotFoundError" in w for w in doc["warnings"])


def test_duplicate_env_names_name_both_files(repo, tmp_path):
    (repo / "services/again.py").write_text("import flyte\nx = flyte.TaskEnvironment(name='preprocessing')\n")
    err = _fails(repo, tmp_path / "c")
    assert "`preprocessing`" in err and "services/again.py" in err and "services/preprocessing/tasks.py" in err


def test_cycle_made_with_add_dependency_is_named_in_order(repo, tmp_path):
    (repo / "services/cycle.py").write_text(
        "import flyte\n"
        "x = flyte.TaskEnvironment(name='x-env')\n"
        "y = flyte.TaskEnvironment(name='y-env')\n"
        "z = flyte.TaskEnvironment(name='z-env', depends_on=[y])\n"
        "x.add_dependency(z)\n"
        "y.add_dependency(x)\n"
    )
    err = _fails(repo, tmp_path / "c")
    assert "depends_on cycle: x-env → z-env → y-env → x-env" in err


def test_unknown_variable_name(repo, tmp_path):
    err = _fails(repo, tmp_path / "c", "targets", "services/inference/tasks.py", "nope_env")
    assert "no TaskEnvironment named `nope_env`" in err and "inference_env" in err


def test_bad_config_key_and_value(repo, tmp_path):
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('copy-style = "loaded_modules"', 'copy-style = "everything"'))
    err = _fails(repo, tmp_path / "c")
    assert "Field tool.hatch.build.targets.flyte.copy-style must be one of: loaded_modules, all, none" in err
    pyproject.write_text(text.replace('copy-style = "loaded_modules"', 'copy-style = "all"\ncopy_style = "all"'))
    err = _fails(repo, tmp_path / "c")
    assert "Unknown field tool.hatch.build.targets.flyte.copy_style" in err and "copy-style" in err


def test_domain_is_initialised_during_discovery(repo, tmp_path):
    (repo / "services/by_domain.py").write_text(
        "import flyte\n"
        "env = flyte.TaskEnvironment(name='dom-' + (flyte.current_domain() or 'none'))\n"
    )
    cache = tmp_path / "c"
    staging = flyte_build("targets", "--json", "--domain", "staging", "--project", "p", cwd=repo, cache=cache)
    assert staging.rc == 0, staging.err
    assert "dom-staging" in {e["env"] for e in staging.json()["envs"]}
    prod = flyte_build("targets", "--json", "--domain", "production", "--project", "p", cwd=repo, cache=cache)
    assert "dom-production" in {e["env"] for e in prod.json()["envs"]}


IGNORED = {
    "pyproject.toml": '[project]\nname = "ignored"\nversion = "0"\n',
    "good.py": "import flyte\n\ngood_env = flyte.TaskEnvironment(name='good', image='ghcr.io/example/good:1')\n\n\n"
               "@good_env.task\ndef ok() -> int:\n    return 1\n",
    # made an env and a task, then failed: half made
    "broken.py": "import flyte\n\nbroken_env = flyte.TaskEnvironment(name='broken', image='ghcr.io/example/b:1')\n\n\n"
                 "@broken_env.task\ndef step() -> int:\n    return 1\n\n\nraise RuntimeError('config missing')\n",
    # an env made around a ContainerTask (declared in flyte's own from_task), then a failure
    "cont.py": "import flyte\nfrom flyte.extras import ContainerTask\n\n"
               "greet = ContainerTask(name='greet', image='x:1', command=['/bin/sh', '-c', 'true'])\n"
               "container_env = flyte.TaskEnvironment.from_task('container_env', greet)\nraise RuntimeError('late')\n",
    # an env whose module loads, with a task in a module that fails
    "half.py": "import flyte\n\nhalf_env = flyte.TaskEnvironment(name='half', image='ghcr.io/example/h:1')\n",
    "half_tasks.py": "from half import half_env\n\n\n@half_env.task\ndef extra() -> int:\n    return 2\n\n\n"
                     "import no_such_package_here  # noqa: E402\n",
    # an env depending on one that is dropped
    "top.py": "import flyte\nfrom half import half_env\n\ntop_env = flyte.TaskEnvironment(name='top', image='ghcr.io/example/t:1', "
              "depends_on=[half_env])\n",
}


def test_ignore_load_errors_drops_half_made_envs_and_their_dependents(tmp_path):
    """-i keeps no env a failed import left half made (its task would name a module
    that is not there: "Object step has no module"), nor any env depending on one."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for rel, text in IGNORED.items():
        (repo / rel).write_text(text)
    (repo / "pyproject.toml").write_text('[project]\nname = "repo"\nversion = "0"\n')
    run = flyte_build("-i", "deploy", "--dry-run", "--json", cwd=repo, cache=tmp_path / "c")
    assert run.rc == 0, run.err
    doc = run.json()
    assert doc["order"] == ["good"] and doc["failed"] == []
    warnings = "\n".join(doc["warnings"])
    assert "environment `broken` dropped: its module broken.py failed to import" in warnings
    assert "environment `half` dropped: its task half.extra is declared in module half_tasks, which failed to import" in warnings
    assert "environment `top` dropped: it depends on `half`, which was dropped" in warnings
    assert "environment `container_env` dropped: its module cont.py failed to import" in warnings
    assert "has no module" not in run.err + warnings
    targets = flyte_build("-i", "targets", "--json", cwd=repo, cache=tmp_path / "c")
    assert targets.rc == 0 and [e["env"] for e in targets.json()["envs"]] == ["good"]


def test_a_module_imported_under_two_names_says_so_as_flyte_does(tmp_path):
    """A uv workspace member's `src` on sys.path and under the root: its file is
    imported twice, under two names. Both names, the sys.path entry and the fixes
    are said (not "two environments are named X" with one file), and flyte's own
    plan names the same two modules; declaring the source root fixes it."""
    import os

    from tests.support import flyte_reference as fr

    repo = tmp_path / "repo"
    member = repo / "packages/feeder/src/feeder"
    member.mkdir(parents=True)
    (repo / "app").mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "birds"\nversion = "0"\n')
    (member / "__init__.py").write_text("")
    (member / "envs.py").write_text("import flyte\n\nfeeder_env = flyte.TaskEnvironment(name='feeder')\n\n\n"
                                    "@feeder_env.task\ndef feed(n: int = 1) -> str:\n    return 'f' * n\n")
    (repo / "app/main.py").write_text("import flyte\nfrom feeder.envs import feeder_env\n\n"
                                      "env = flyte.TaskEnvironment(name='birds', depends_on=[feeder_env])\n")
    env = {"PYTHONPATH": str(repo / "packages/feeder/src")}
    run = flyte_build("deploy", "--dry-run", cwd=repo, cache=tmp_path / "c", env=env)
    assert run.rc == 2 and "Traceback" not in run.err, run.err
    err = run.err
    assert ("packages/feeder/src/feeder/envs.py was imported under two module names, "
            "`packages.feeder.src.feeder.envs` (its path under the root) and `feeder.envs` "
            "(from the sys.path entry packages/feeder/src)") in err
    assert 'source-roots = ["packages/feeder/src"]' in err and "two environments are named" not in err
    ref = fr.flyte_answer(repo, env={**os.environ, **env})["error"]
    assert "'packages.feeder.src.feeder.envs' and 'feeder.envs'" in ref
    with (repo / "pyproject.toml").open("a") as f:
        f.write('\n[tool.flyte-build]\nsource-roots = ["packages/feeder/src"]\n')
    fixed = flyte_build("deploy", "--dry-run", "--json", cwd=repo, cache=tmp_path / "c", env=env)
    assert fixed.rc == 0, fixed.err
    assert fixed.json()["order"] == ["feeder", "birds"]
