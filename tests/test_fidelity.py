"""Differential tests: flyte-build against flyte's own functions on the same trees.

For each project of tests/support/corpus.py, flyte's answer (loading as
`flyte deploy --recursive`, `list_files_to_bundle`, flyte's real
`_deploy_task` with default inputs, documentation and triggers) and
flyte-build's (its plan and bundles) must agree: the same envs, the same
tasks with the same loader args, the same specs apart from image URI, version
and bundle URI; and every task loads (the listed ones also run) from its
env's own extracted bundle in a clean `python -I` with flyte's resolver.

The corpus is computed once per session, two projects at a time (each one is
a handful of child processes), so every case test just reads its outcome.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import corpus
from tests.support.cli import flyte_build
from tests.support import flyte_reference as fr

CASES = {c.name: c for c in corpus.CASES}
# the first case's test also computes the whole corpus (a session fixture, two projects at a time)
pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="session")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("fidelity")
    cache = base / "cache"

    def one(item):
        name, cases = item
        case = cases[0]
        proj = corpus.materialize_group(cases, base, name)
        ignore = ("container.env[0].value",) if "sys_path" in case.expect else ()
        try:
            got = fr.differential(proj, case.root, case.path, case.flyte_root, case.copy_style, case.images,
                                  case.pythonpath, tuple(t for c in cases for t in c.run), case.image_paths,
                                  cache_dir=cache / name, ignore_spec=ignore)
            return {c.name: (got.only(c.envs) if c.envs else got) for c in cases}
        except Exception as exc:  # noqa: BLE001 - reported by the case's own test
            return {c.name: exc for c in cases}

    out: dict = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for d in pool.map(one, corpus.groups().items()):
            out.update(d)
    return out


def test_corpus_covers_the_layouts():
    assert len(CASES) >= 12


@pytest.mark.parametrize("name", list(CASES))
def test_same_as_flyte(outcomes, name):
    case, got = CASES[name], outcomes[name]
    if isinstance(got, Exception):
        raise got
    ref, ours = got.ref, got.ours
    assert ref["error"] is None and not ref["failed"], f"flyte itself cannot load {name}: {ref}"
    assert ours.error is None, ours.error
    assert got.diffs == [], "\n".join(got.diffs)
    # every task loads from its own env's bundle; the listed ones ran
    if case.copy_style != "none":
        assert set(got.runs) == {n for e in ours.envs.values() for n, t in e["tasks"].items() if t["loader_args"]}
        bad = {t: r for t, r in got.runs.items() if r.startswith("FAILED")}
        assert not bad, bad
        for t in case.run:
            assert got.runs[t].startswith("ran: "), (t, got.runs[t])
    for t, want in case.expect.items():
        if "." in t:
            assert got.runs[t] == want
    if "sys_path" in case.expect:
        for e in ours.envs.values():
            for t in e["tasks"].values():
                env = {x["key"]: x["value"] for x in t["spec"]["task_template"]["container"]["env"]}
                assert env["_F_SYS_PATH"] == case.expect["sys_path"]
    if "images" in case.expect:
        assert {n: e["image"] for n, e in ours.envs.items()} == case.expect["images"]
    for n, e in ours.envs.items():
        assert e["image"], f"{n}: no image planned"


def test_src_layout_ships_package_inits_and_sys_path(outcomes):
    got = outcomes["src_layout_root_project"]
    files = got.ours.envs["shop"]["files"]
    assert "src/shop/__init__.py" in files and "src/shop/tasks/__init__.py" in files
    spec = got.ours.envs["shop"]["tasks"]["shop.price"]
    assert spec["loader_args"] == ["mod", "shop.tasks.price", "instance", "price"]


def test_modules_loaded_by_computed_name_are_bundled(outcomes):
    files = outcomes["plugins_by_name"].ours.envs["plug"]["files"]
    assert {"plug/plugins/alpha.py", "plug/plugins/beta.py", "plug/plugins/__init__.py", "plug/__init__.py"} <= set(files)
    assert "plug/plugins/unused.py" not in files  # nothing loads it


def test_root_package_ships_its_own_init(outcomes):
    assert outcomes["root_package"].ours.envs
    for env in outcomes["root_package"].ours.envs.values():
        assert "__init__.py" in env["files"]


def test_cross_env_image_cache_names_every_env(outcomes):
    spec = outcomes["cross_env_calls"].ours.envs["env_a"]["tasks"]["env_a.a_task"]["spec"]
    args = spec["task_template"]["container"]["args"]
    lookup = fr._image_cache(args[args.index("--image-cache") + 1])
    # every env of the deploy (the shared project has more), each with its own image
    assert {"env_a": "ghcr.io/example/a:1", "env_b": "ghcr.io/example/b:1", "env_c": "ghcr.io/example/c:1"}.items() <= lookup.items()
    assert len(lookup) > 3


def test_defaults_docs_and_triggers_are_sent(outcomes):
    t = outcomes["defaults_docs_trigger"].ours.envs["report"]["tasks"]["report.summarize"]
    assert [d["name"] for d in t["spec"]["default_inputs"]] == ["days", "title", "scale"]
    assert t["spec"]["documentation"]["short_description"] == "Summarize the last days."
    assert sorted(x["name"] for x in t["triggers"]) == ["hourly", "nightly"]


def test_copy_style_all_ships_flytes_files(outcomes):
    got = outcomes["copy_all_ignores"]
    ours = got.ours.envs["allfiles"]["files"]
    assert ours == got.ref["files"]
    assert "tracked.tmp" in ours and "late.txt" in ours and "nested/build/keep.py" in ours
    for gone in ("notes.tmp", "late.tmp", "run.log", "nested/debug.log", "build/gen.py", "dist/pkg.whl",
                 "proj.egg-info/PKG-INFO", "scratch/a.txt", "venv/bin/python", "env/conf"):
        assert gone not in ours


def test_copy_style_none_with_includes_ships_an_include_only_bundle(outcomes):
    got = outcomes["none_with_includes"]
    env = got.ours.envs["service"]
    assert env["files"] == got.ref["files"] == ["config/settings.yaml", "data/a.csv", "data/b.csv"]
    # the version came from the bundle (no --version), and the image is used as it is
    assert env["image"] == "ghcr.io/example/service:2"


def test_flyte_standard_ignore_patterns_match_flytes():
    from flyte._code_bundle._ignore import STANDARD_IGNORE_PATTERNS

    from flyte_build.archives.bundle_files import FLYTE_STANDARD_IGNORES

    assert list(FLYTE_STANDARD_IGNORES) == list(STANDARD_IGNORE_PATTERNS)


def _cli(args, cwd, cache, timeout=300):
    return flyte_build(*args, cwd=cwd, cache=cache, env={"PYTHONPATH": None}, timeout=timeout)


def test_cli_parity_flags(tmp_path):
    """`flyte deploy`'s spellings: -r, -p, -d, --dryrun, an unnamed --image as the
    default image, --all DIR (that directory's own files only)."""
    proj = tmp_path / "proj"
    (proj / "flows" / "sub").mkdir(parents=True)
    (proj / "flows" / "a.py").write_text("import flyte\n\nenv = flyte.TaskEnvironment(name='a')\n\n\n@env.task\ndef t() -> int:\n    return 1\n")
    (proj / "flows" / "sub" / "b.py").write_text("import flyte\n\nenv = flyte.TaskEnvironment(name='b')\n\n\n@env.task\ndef u() -> int:\n    return 2\n")
    r = _cli(["deploy", "--dryrun", "--json", "-r", "flows", "-p", "proj", "-d", "dev", "--image", "reg.example.com/default:7"],
             proj, tmp_path / "cache")
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert doc["project"] == "proj" and doc["domain"] == "dev"
    assert {t["env"]: t["image"] for t in doc["targets"]} == {"a": "reg.example.com/default:7", "b": "reg.example.com/default:7"}
    r = _cli(["deploy", "--dry-run", "--json", "--all", "flows"], proj, tmp_path / "cache")
    assert r.rc == 0, r.err
    assert [t["env"] for t in json.loads(r.out)["targets"]] == ["a"]
    # FILE without an env variable: the envs declared in it
    r = _cli(["deploy", "--dry-run", "--json", "flows/sub/b.py"], proj, tmp_path / "cache")
    assert r.rc == 0, r.err
    assert [t["env"] for t in json.loads(r.out)["targets"]] == ["b"]
    # the Python API takes flyte.deploy's arguments: dryrun (deprecated alias), interactive_mode
    import flyte_build

    plan = flyte_build.deploy("a", dryrun=True, root_dir=str(proj), cache_dir=str(tmp_path / "cache"),
                              images={"default": "reg.example.com/default:7"})
    assert [e.env for e in plan.envs] == ["a"] and plan.envs[0].image == "reg.example.com/default:7"
    with pytest.raises(NotImplementedError):
        flyte_build.deploy("a", interactive_mode=True, root_dir=str(proj), cache_dir=str(tmp_path / "cache"))


def test_env_with_tasks_that_serializes_none_fails_naming_it(tmp_path):
    """Discovery saw a task, serialization did not (the module registers it only
    on its first import on this machine): the plan fails, exit 1, naming the env."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "envs.py").write_text("import flyte\n\nenv = flyte.TaskEnvironment(name='flaky')\n")
    (proj / "tasks.py").write_text(
        "import pathlib\n\nfrom envs import env\n\nmark = pathlib.Path(__file__).with_name('seen')\n"
        "if not mark.exists():\n    mark.write_text('x')\n\n    @env.task\n    def t() -> int:\n        return 1\n")
    r = _cli(["deploy", "--dry-run", "--root-dir", "."], proj, tmp_path / "cache")  # no pyproject.toml: the root is named
    assert r.rc == 1, (r.rc, r.out, r.err)
    assert "`flaky` has 1 tasks (flaky.t) but serialized none" in r.err


def test_container_task_is_a_raw_container_spec_with_its_own_image(outcomes):
    got = outcomes["container_task"]
    env = got.ours.envs["container_env"]
    assert env["image"] == "ghcr.io/example/shell:1"
    spec = env["tasks"]["greet"]["spec"]
    tt = spec["task_template"]
    assert tt["type"] == "raw-container" and env["tasks"]["greet"]["loader_args"] == []
    assert tt["container"]["image"] == "ghcr.io/example/shell:1"
    assert tt["container"]["args"][:2] == ["/bin/sh", "-c"]
    assert tt["container"]["data_config"]["output_path"] == "/var/outputs"
    assert [v["key"] for v in tt["interface"]["outputs"]["variables"]] == ["greeting"]
    # the Python env that calls it depends on it, and its task loads from its own bundle
    assert got.runs == {"container_caller.hello": "loaded"}


def test_app_endpoint_parameter_is_serialized_offline_and_ordered(outcomes):
    got = outcomes["app_endpoint"]
    # the same App as flyte's own _deploy_app (compared in test_same_as_flyte); here what it holds
    ref = got.ref["envs"]["frontend-app"]["app"]
    assert "error" not in ref, ref
    app = got.ours.envs["frontend-app"]["app"]
    assert app["spec"]["inputs"]["items"] == [{"name": "backend_url", "string_value": "backend-app"}]
    assert "--parameters" in app["spec"]["container"]["command"]
    order = list(got.ours.envs)
    assert order.index("backend-app") < order.index("frontend-app")


def test_connector_task_is_its_own_task_type_with_no_container(outcomes):
    got = outcomes["connector_task"]
    tt = got.ours.envs["warehouse"]["tasks"]["count_rows"]["spec"]["task_template"]
    assert tt["type"] == "warehouse_query" and "container" not in tt
    assert tt["sql"]["statement"] == "SELECT COUNT(*) FROM events WHERE day = @day"
    assert tt["custom"] == {"table": "events", "domain": ""}  # the dry run's domain, filled in late as flyte's
    assert got.runs == {}  # nothing to load: a connector runs it
