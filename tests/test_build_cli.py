"""`flyte-build build` on sample_monorepo: caching, incrementality, explain, outputs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path


from tests.support.cli import age_tree, build_json, digests, flyte_build

ENVS = ["inference", "ml_training", "ml_training_large", "preprocessing", "reporting", "visualization"]




def test_second_build_is_all_cache_hits(repo, tmp_path):
    cache = tmp_path / "cache"
    first = build_json(repo, cache)
    assert sorted(r["target"] for r in first["targets"]) == [f"bundle:{e}" for e in ENVS]
    assert all(r["status"] == "built" and r["digest"].startswith("sha256:") for r in first["targets"])
    second = build_json(repo, cache)
    assert all(r["cached"] is True for r in second["targets"])
    assert digests(first) == digests(second)
    assert second["discovery"]["cached"] is True
    for r in second["targets"]:
        assert Path(r["path"]).is_file() and r["size"] == Path(r["path"]).stat().st_size


def test_noop_build_imports_neither_flyte_nor_user_code(repo, tmp_path):
    cache = tmp_path / "cache"
    build_json(repo, cache)
    script = (
        "import sys\n"
        "from flyte_build.workspace import Settings, Workspace\n"
        "ws = Workspace(Settings())\n"
        "res = ws.build()\n"
        "assert all(r.cached for r in res), res\n"
        "print(sorted(m for m in sys.modules if m == 'flyte' or m.startswith(('flyte.', 'services', 'libs'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True,
                          env={**__import__("os").environ, "FLYTE_BUILD_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_edit_rebuilds_only_bundles_whose_closure_holds_the_file(repo, tmp_path):
    cache = tmp_path / "cache"
    before = digests(build_json(repo, cache))
    # libs/mlkit/serving.py is imported only by inference (and shipped by reporting's copy-style `all`)
    with open(repo / "libs/mlkit/serving.py", "a") as f:
        f.write("\n# a comment that changes the bytes\n")
    after_doc = build_json(repo, cache)
    after = digests(after_doc)
    changed = sorted(t for t in before if before[t] != after[t])
    assert changed == ["bundle:inference", "bundle:reporting"]
    status = {r["target"]: r["status"] for r in after_doc["targets"]}
    assert {t for t, s in status.items() if s == "built"} == set(changed)


def test_shared_library_edit_touches_every_importer(repo, tmp_path):
    cache = tmp_path / "cache"
    before = digests(build_json(repo, cache))
    with open(repo / "libs/common/stats.py", "a") as f:
        f.write("\nEXTRA = 1\n")
    after = digests(build_json(repo, cache))
    changed = {t for t in before if before[t] != after[t]}
    # every env reaches libs/common/stats.py: directly, or through libs/mlkit/model.py
    # (inference, ml_training_large) — so every bundle changes, and none is left stale
    assert changed == {
        "bundle:inference", "bundle:ml_training", "bundle:ml_training_large",
        "bundle:preprocessing", "bundle:reporting", "bundle:visualization",
    }


def test_explain_names_the_changed_file(repo, tmp_path):
    cache = tmp_path / "cache"
    build_json(repo, cache)
    up = flyte_build("explain", "bundle:inference", cwd=repo, cache=cache)
    assert up.rc == 0 and "up to date" in up.out
    with open(repo / "libs/mlkit/serving.py", "a") as f:
        f.write("\n# edit\n")
    run = flyte_build("explain", "bundle:inference", cwd=repo, cache=cache)
    assert run.rc == 0
    assert "would rebuild" in run.out and "changed: libs/mlkit/serving.py" in run.out
    other = flyte_build("explain", "bundle:preprocessing", cwd=repo, cache=cache)
    assert "up to date" in other.out


def test_lazy_import_inside_a_task_is_bundled(repo, tmp_path):
    doc = build_json(repo, tmp_path / "cache", "bundle:visualization")
    (rec,) = [r for r in doc["targets"] if r["target"] == "bundle:visualization"]
    names = {m.name for m in tarfile.open(rec["path"]).getmembers()}
    assert "services/visualization/render.py" in names  # imported only inside report_pipeline
    assert "libs/common/unused.py" not in names
    assert not any(n.startswith("services/inference") for n in names)


def test_copy_style_all_ships_data_files_but_honours_ignores(repo, tmp_path):
    doc = build_json(repo, tmp_path / "cache", "bundle:reporting")
    (rec,) = doc["targets"]
    names = {m.name for m in tarfile.open(rec["path"]).getmembers()}
    assert "services/reporting/config/report.json" in names
    assert "libs/common/unused.py" in names
    assert not any(n.startswith("notebooks/") or n.endswith(".ipynb") for n in names)  # .flyteignore
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_out_dir_names_each_bundle_by_env_and_sha256(repo, tmp_path):
    import hashlib
    import json

    out, cache = tmp_path / "out", tmp_path / "cache"
    doc = build_json(repo, cache, "--out", str(out))
    assert len(doc["targets"]) == 6, doc["targets"]
    manifest = json.loads(Path(doc["manifest"]).read_text())["targets"]
    assert {r["target"]: out / r["path"] for r in manifest} == {r["target"]: Path(r["path"]) for r in doc["targets"]}
    for r in doc["targets"]:
        sha = r["digest"].split(":")[1]
        assert Path(r["path"]) == out / "bundle" / f"{r['env']}-{sha}.tar.gz"
        assert hashlib.sha256(Path(r["path"]).read_bytes()).hexdigest() == sha
    # what a user types to find one env's bundle finds exactly it (ml_training_large is no ml_training)
    assert [p.name for p in (out / "bundle").glob("ml_training-*")] == [Path(next(
        r["path"] for r in doc["targets"] if r["env"] == "ml_training")).name]


def test_out_dir_manifest_and_summary_say_where_the_artifacts_are(repo, tmp_path):
    import hashlib
    import json

    out, cache = tmp_path / "out", tmp_path / "cache"
    run = flyte_build("build", "--out", str(out), cwd=repo, cache=cache)
    assert run.rc == 0, run.err
    manifest = out / "manifest.json"
    assert f"artifacts: {out}/<kind>/<env>-<sha256>.<ext>, listed in {manifest}" in run.out
    first = manifest.read_bytes()
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    records = json.loads(first)["targets"]
    assert [r["target"] for r in records] == sorted(f"bundle:{e}" for e in ENVS)
    for r in records:
        assert r["target"] == f"bundle:{r['env']}" and not {"cached", "status", "seconds", "source"} & set(r)
        assert r["path"] == f"bundle/{r['env']}-{r['digest'].split(':')[1]}.tar.gz"
        assert hashlib.sha256((out / r["path"]).read_bytes()).hexdigest() == r["digest"].split(":")[1]
    again = build_json(repo, cache, "--out", str(out))  # every target cached now: the same files, the same bytes
    assert again["manifest"] == str(manifest) and manifest.read_bytes() == first
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    plain = flyte_build("build", cwd=repo, cache=cache)
    assert f"artifacts: in the local cache, {cache / 'cas'}" in plain.out


def test_out_dir_replaces_an_envs_earlier_bundle_and_the_manifest_is_this_runs(repo, tmp_path):
    import json

    out, cache = tmp_path / "out", tmp_path / "cache"
    first = {r["env"]: Path(r["path"]) for r in build_json(repo, cache, "--out", str(out))["targets"]}
    mine = out / "bundle" / "notes.txt"  # a file the build did not write stays
    mine.write_text("keep me")
    module = repo / "services" / "visualization" / "tasks.py"
    module.write_text(module.read_text() + "\n# changed\n")
    second = build_json(repo, cache, "bundle:visualization", "--out", str(out))
    (rec,) = second["targets"]
    now = Path(rec["path"])
    assert json.loads(Path(second["manifest"]).read_text())["targets"][0]["path"] == f"bundle/{now.name}"
    assert len(json.loads(Path(second["manifest"]).read_text())["targets"]) == 1
    assert [p.name for p in (out / "bundle").glob("visualization-*")] == [now.name]
    assert now != first["visualization"] and not first["visualization"].exists()
    # the other envs' copies were not this run's: not in its manifest, left alone
    assert all(first[e].is_file() for e in ENVS if e != "visualization") and mine.read_text() == "keep me"


def test_out_dir_gives_two_envs_with_one_bundle_a_file_each(tmp_path):
    from tests.support.repos import make_repo

    body = "import flyte\n" + "".join(
        f"{v} = flyte.TaskEnvironment(name={v!r})\n\n@{v}.task\nasync def t_{v}(x: int) -> int:\n    return x\n\n" for v in ("alpha", "beta"))
    root = make_repo(tmp_path / "twins", {"envs.py": body})
    out = tmp_path / "out"
    doc = build_json(root, tmp_path / "cache", "--out", str(out))
    by_env = {r["env"]: r for r in doc["targets"]}
    assert sorted(by_env) == ["alpha", "beta"]
    assert by_env["alpha"]["digest"] == by_env["beta"]["digest"]  # one module, one bundle
    sha = by_env["alpha"]["digest"].split(":")[1]
    assert sorted(p.name for p in (out / "bundle").iterdir()) == [f"alpha-{sha}.tar.gz", f"beta-{sha}.tar.gz"]


def test_patterns_select_targets(repo, tmp_path):
    doc = build_json(repo, tmp_path / "cache", "bundle:ml_training*")
    assert [r["target"] for r in doc["targets"]] == ["bundle:ml_training", "bundle:ml_training_large"]
    deploy = flyte_build("build", "deploy:ml_training", cwd=repo, cache=tmp_path / "cache")
    assert deploy.rc == 2 and "use `flyte-build deploy`" in deploy.err
    bad = flyte_build("build", "bundle:nope", cwd=repo, cache=tmp_path / "cache")
    assert bad.rc == 2 and "matches nothing" in bad.err and "Traceback" not in bad.err


def test_summary_table_and_graph_pictures(repo, tmp_path):
    cache = tmp_path / "cache"
    run = flyte_build("build", cwd=repo, cache=cache)
    assert run.rc == 0
    assert "bundle:visualization" in run.out and "6 targets: 6 built, 0 cached" in run.out
    again = flyte_build("build", cwd=repo, cache=cache)
    assert "6 targets: 0 built, 6 cached" in again.out
    dot = flyte_build("graph", "--format", "dot", cwd=repo, cache=cache)
    assert dot.out.startswith("digraph") and '"bundle:preprocessing"' in dot.out
    mer = flyte_build("graph", "--format", "mermaid", cwd=repo, cache=cache)
    assert mer.out.startswith("graph LR")
    txt = flyte_build("graph", cwd=repo, cache=cache)
    order = txt.out.split("deploy order: ")[1].splitlines()[0].split(" → ")
    assert order.index("preprocessing") < order.index("ml_training") < order.index("visualization")
    js = flyte_build("graph", "--format", "json", cwd=repo, cache=cache).out
    assert '"deploy_order"' in js


def test_targets_json_lists_envs_and_records(repo, tmp_path):
    cache = tmp_path / "cache"
    run = flyte_build("targets", "--json", cwd=repo, cache=cache)
    assert run.rc == 0
    doc = run.json()
    envs = {e["env"]: e for e in doc["envs"]}
    assert sorted(envs) == ENVS
    assert envs["ml_training"]["depends_on"] == ["preprocessing"]
    assert envs["visualization"]["file"] == "services/visualization/tasks.py"
    assert envs["ml_training_large"]["file"] == "services/ml_training/large.py"
    for rec in doc["targets"]:
        assert {"target", "kind", "env", "digest", "cached", "path"} <= set(rec)
    # single file + variable, as `flyte deploy FILE VAR`
    one = flyte_build("targets", "services/ml_training/tasks.py", "ml_training_env", "--json", cwd=repo, cache=cache).json()
    assert [e["env"] for e in one["envs"] if e["selected"]] == ["ml_training"]
    assert {e["env"] for e in one["envs"]} == {"ml_training", "preprocessing"}  # its dependency comes along


def test_cache_verify_and_gc(repo, tmp_path):
    cache = tmp_path / "cache"
    build_json(repo, cache)
    ok = flyte_build("cache", "verify", cwd=repo, cache=cache)
    assert ok.rc == 0 and "ok" in ok.out
    blob = next((cache / "cas" / "sha256").rglob("*"))
    while blob.is_dir():
        blob = next(blob.iterdir())
    blob.write_bytes(b"corrupted")
    bad = flyte_build("cache", "verify", cwd=repo, cache=cache)
    assert bad.rc == 1 and "bytes hash to" in bad.out
    # the next build detects it, rebuilds, and the cache is sound again
    doc = build_json(repo, cache)
    assert any(r["status"] == "built" for r in doc["targets"])
    assert flyte_build("cache", "verify", cwd=repo, cache=cache).rc == 0
    stats = flyte_build("cache", "stats", "--json", cwd=repo, cache=cache).json()
    assert stats["local"]["blobs"] >= 6 and stats["last_run"]["built"] >= 1


def test_new_module_is_discovered_after_cached_runs(repo, tmp_path):
    cache = tmp_path / "cache"
    build_json(repo, cache)
    age_tree(repo)
    assert build_json(repo, cache)["discovery"]["cached"] is True
    assert build_json(repo, cache)["discovery"]["cached"] is True
    (repo / "services/preprocessing/extra.py").write_text(
        "import flyte\nextra_env = flyte.TaskEnvironment(name='extra')\n"
    )
    doc = build_json(repo, cache)
    assert doc["discovery"]["cached"] is False
    assert "bundle:extra" in digests(doc)
    (repo / "services/preprocessing/extra.py").unlink()
    doc = build_json(repo, cache)
    assert "bundle:extra" not in digests(doc)


def test_a_module_created_later_joins_the_closures_that_import_it(repo, tmp_path):
    """Resolved imports are kept between runs; a new file must still be found."""
    cache = tmp_path / "cache"
    tasks = repo / "services/inference/tasks.py"
    tasks.write_text(tasks.read_text() + "\n\ndef _later():\n    from libs.mlkit import late_addition  # not there yet\n")
    build_json(repo, cache)
    age_tree(repo)
    build_json(repo, cache)  # runs with trusted directory mtimes, keeps the resolved imports
    before = build_json(repo, cache, "bundle:inference")["targets"][0]
    assert "libs/mlkit/late_addition.py" not in {m.name for m in tarfile.open(before["path"]).getmembers()}
    (repo / "libs/mlkit/late_addition.py").write_text("VALUE = 1\n")
    after = build_json(repo, cache, "bundle:inference")["targets"][0]
    assert after["digest"] != before["digest"]
    assert "libs/mlkit/late_addition.py" in {m.name for m in tarfile.open(after["path"]).getmembers()}


def test_a_new_import_in_a_kept_closure_is_followed(repo, tmp_path):
    """Closures are kept between runs; a file that gains an import must still pull it in."""
    cache = tmp_path / "cache"
    build_json(repo, cache)
    age_tree(repo)
    build_json(repo, cache)
    before = build_json(repo, cache, "bundle:preprocessing")["targets"][0]
    assert before["cached"] and "libs/common/unused.py" not in {m.name for m in tarfile.open(before["path"]).getmembers()}
    tasks = repo / "services/preprocessing/tasks.py"
    tasks.write_text(tasks.read_text() + "\n\ndef _helper():\n    from libs.common import unused  # a new lazy import\n")
    after = build_json(repo, cache, "bundle:preprocessing")["targets"][0]
    assert "libs/common/unused.py" in {m.name for m in tarfile.open(after["path"]).getmembers()}
