"""Flyte's own answer for a project, and flyte-build's, side by side.

The differential tests (tests/test_fidelity.py) and the examples script
(bench/examples_diff.py) both use this. Flyte's answer is computed in a child
process by flyte's own functions, as `flyte deploy --recursive` runs them:

- loading: `flyte.init(root_dir=...)` then `flyte._utils.load_python_modules`
  over the path (recursive), `list_loaded_environments`, `plan_deploy`;
- images: `resolve_code_bundle_layer` by copy style, `from_ref_name` through
  the `--image` mappings, as `_build_images` does (nothing is built: every
  env gets a placeholder URI in one merged image cache, like flyte's);
- task specs: flyte's real `_deploy_task` (default inputs, documentation
  entity, docstring descriptions, triggers, `_F_SYS_PATH`) with the control
  plane client replaced by one that records the DeployTask request;
- files: `list_files_to_bundle` with flyte's default ignores (StandardIgnore,
  GitIgnore, FlyteIgnore) and the envs' `include` files, or the include-only
  bundle of copy style none.

flyte-build's answer comes from its Python API on the same tree: the
deploy plan (`flyte_build.plan`) and the bundles (`flyte_build.build`).
`compare` names every difference; `run_bundles` extracts each env's bundle
into an empty directory and loads (and, where every input has a default,
runs) each task there with flyte's resolver in `python -I`.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDER_IMAGE = "IMG"


# -- the child: flyte's own answer ----------------------------------------------------
def _child(req: dict) -> dict:
    root = Path(os.path.realpath(req["root"]))
    os.chdir(req.get("cwd") or root)
    # the `flyte` console script has its bin directory first, not the working directory
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath(os.getcwd()):
        del sys.path[0]
    import asyncio

    import flyte
    import flyte._deploy as fdeploy
    from flyte._code_bundle._ignore import FlyteIgnore, GitIgnore, StandardIgnore
    from flyte._code_bundle._includes import collect_env_include_files
    from flyte._code_bundle._packaging import list_files_to_bundle, list_relative_files_to_bundle
    from flyte._environment import list_loaded_environments
    from flyte._image import Image, resolve_code_bundle_layer
    from flyte._internal.image_cache import ImageCache
    from flyte._internal.runtime import trigger_serde
    from flyte._task_environment import TaskEnvironment
    from flyte._utils import load_python_modules
    from flyte.models import CodeBundle, SerializationContext
    from google.protobuf.json_format import MessageToDict

    images = dict(req.get("images") or {})
    flyte.init(root_dir=root, images=images or None)
    cfg_images = fdeploy.get_init_config().images
    loaded, failed = load_python_modules(Path(req["path"]).resolve(), root, True)
    out: dict = {"failed": [[str(p), str(e)] for p, e in failed], "envs": {}, "files": [], "error": None}
    kinds = (TaskEnvironment,)
    if "flyte.app" in sys.modules:  # apps deploy beside task envs in `flyte deploy`
        from flyte.app import AppEnvironment

        kinds = (TaskEnvironment, AppEnvironment)
    envs = [e for e in list_loaded_environments() if isinstance(e, kinds)]
    try:
        plans = fdeploy.plan_deploy(*envs)
    except Exception as exc:  # noqa: BLE001 - flyte's own refusal is part of its answer
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    style = req.get("copy_style", "loaded_modules")
    all_envs = {n: e for p in plans for n, e in p.envs.items()}
    lookup = {}
    image_errors = {}
    for name, env in all_envs.items():
        img = env.image
        try:
            if isinstance(img, Image):
                img = resolve_code_bundle_layer(img, style, root)
                if img._ref_name is not None and img._ref_name not in cfg_images:
                    raise ValueError(f"Image name '{img._ref_name}' not found in config")
        except Exception as exc:  # noqa: BLE001
            image_errors[name] = f"{type(exc).__name__}: {exc}"
        lookup[name] = PLACEHOLDER_IMAGE
    includes = collect_env_include_files(all_envs.values())
    if style != "none":
        files, _ = list_files_to_bundle(root, True, StandardIgnore, GitIgnore, FlyteIgnore, copy_style=style,
                                        additional_files=includes or None)
    elif includes:
        files, _ = list_relative_files_to_bundle(includes, root)
    else:
        files = []
    out["files"] = sorted(Path(f).resolve().relative_to(root).as_posix() for f in files)

    sent: list = []

    class _TaskService:
        async def deploy_task(self, request):
            sent.append(request)

    class _Client:
        task_service = _TaskService()

    # flyte's own deploy path, with the control plane replaced by a recorder
    fdeploy.ensure_client = lambda: None
    fdeploy.get_client = lambda: _Client()

    async def _no_offload(*args, **kwargs):
        return None

    trigger_serde.offload_trigger_inputs = _no_offload
    bundle = CodeBundle(tgz="BUNDLE", computed_version="BUNDLE") if (style != "none" or includes) else None
    sc = SerializationContext(project="", domain="", org="", code_bundle=bundle, version="VERSION",
                              image_cache=ImageCache(image_lookup=lookup), root_dir=root)
    for name, env in sorted(all_envs.items()):
        rec = {"tasks": {}, "image_error": image_errors.get(name)}
        if not isinstance(env, TaskEnvironment):
            rec["app"] = _flyte_app(env, sc)
            out["envs"][name] = rec
            continue
        for tname, task in sorted(env.tasks.items()):
            sent.clear()
            try:
                asyncio.run(fdeploy._deploy_task(task, sc, dryrun=False))
            except Exception as exc:  # noqa: BLE001 - flyte's refusal is its answer for this task
                cause = exc.__cause__ or exc
                rec["tasks"][task.name] = {"error": f"{type(cause).__name__}: {cause}", "spec": {}, "loader_args": [],
                                           "triggers": []}
                out["task_errors"] = out.get("task_errors", 0) + 1
                continue
            req_msg = sent[0]
            spec = MessageToDict(req_msg.spec, preserving_proto_field_name=True)
            args = spec["task_template"].get("container", {}).get("args", [])
            rec["tasks"][task.name] = {
                "spec": spec,
                "loader_args": args[args.index("--resolver") + 2:] if "--resolver" in args else [],
                "triggers": [MessageToDict(t, preserving_proto_field_name=True) for t in req_msg.triggers],
                "has_defaults": all(d is not __import__("inspect").Parameter.empty
                                    for _, d in task.interface.inputs.values()),
            }
        out["envs"][name] = rec
    return out


def _flyte_app(env, sc) -> dict:
    """The App flyte's own `_deploy_app` sends (its dry run returns the message it would)."""
    import asyncio

    from flyte.app._deploy import _deploy_app
    from google.protobuf.json_format import MessageToDict

    try:
        app = asyncio.run(_deploy_app(env, sc, dryrun=True)).pb2
    except Exception as exc:  # noqa: BLE001 - flyte's refusal is its answer for this app
        return {"error": f"{type(exc).__name__}: {exc}"}
    return MessageToDict(app, preserving_proto_field_name=True)


# -- the parent ------------------------------------------------------------------------
def flyte_answer(root: Path, path: Path | None = None, copy_style: str = "loaded_modules", images: dict | None = None,
                 env: dict | None = None, timeout: float = 120) -> dict:
    """What `flyte deploy --recursive PATH --root-dir ROOT` would load, bundle and send."""
    req = {"root": str(root), "path": str(path or root), "copy_style": copy_style, "images": images or {}}
    with tempfile.TemporaryDirectory(prefix="flyte-ref-") as tmp:
        rq, rs = Path(tmp) / "req.json", Path(tmp) / "res.json"
        rq.write_text(json.dumps(req))
        e = dict(os.environ if env is None else env)
        e["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [e.get("PYTHONPATH")])])
        e["PYTHONDONTWRITEBYTECODE"] = "1"
        proc = subprocess.run([sys.executable, "-m", "tests.support.flyte_reference", str(rq), str(rs)], cwd=str(root),
                              env=e, capture_output=True, text=True, timeout=timeout)
        if not rs.exists():
            raise RuntimeError(f"flyte's reference run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(rs.read_text())


@dataclass
class BuildAnswer:
    envs: dict  # name -> {"tasks": {name: {"spec", "loader_args", "triggers"}}, "bundle": path or None, "files": [...]}
    error: str | None = None
    warnings: list = field(default_factory=list)


def build_answer(root: Path, path: Path | None = None, copy_style: str | None = None, images: dict | None = None,
                 cache_dir: Path | None = None, env: dict | None = None, timeout: float = 300) -> BuildAnswer:
    """flyte-build's plan and bundles for the same selection, from its Python API (in a child,
    so PYTHONPATH and the working directory are the project's)."""
    req = {"root": str(root), "path": str(path or root), "copy_style": copy_style, "images": images or {},
           "cache_dir": str(cache_dir) if cache_dir else None}
    with tempfile.TemporaryDirectory(prefix="flyte-build-ans-") as tmp:
        rq, rs = Path(tmp) / "req.json", Path(tmp) / "res.json"
        rq.write_text(json.dumps(req))
        e = dict(os.environ if env is None else env)
        e["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [e.get("PYTHONPATH")])])
        proc = subprocess.run([sys.executable, "-m", "tests.support.flyte_reference", "--build", str(rq), str(rs)],
                              cwd=str(root), env=e, capture_output=True, text=True, timeout=timeout)
        if not rs.exists():
            raise RuntimeError(f"flyte-build's run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        d = json.loads(rs.read_text())
        return BuildAnswer(d["envs"], d.get("error"), d.get("warnings", []))


def _build_child(req: dict) -> dict:
    import flyte_build
    from flyte_build.discovery.discover import Selection
    from flyte_build.errors import FlyteBuildError
    from flyte_build.workspace import Settings, Workspace

    root = Path(req["root"])
    path = os.path.relpath(req["path"], os.getcwd())
    try:
        ws = Workspace(Settings(root_dir=str(root), selection=Selection(paths=(path,), recursive=True),
                                copy_style=req.get("copy_style"), images=req.get("images") or {},
                                cache_dir=req.get("cache_dir")))
        plan = flyte_build.plan(ws)
        built = {r.target: r for r in ws.build(["bundle:*"])} if any(t.startswith("bundle:") for t in ws.graph.targets) else {}
    except FlyteBuildError as exc:
        return {"envs": {}, "error": str(exc)}
    out = {}
    for e in plan.envs:
        b = built.get(f"bundle:{e.env}")
        files = []
        if b is not None and b.path:
            with tarfile.open(b.path) as tf:
                files = sorted(m.name for m in tf.getmembers() if m.isfile())
        tasks = {}
        for t in e.tasks:
            args = t.spec["task_template"].get("container", {}).get("args", [])
            tasks[t.name] = {"spec": t.spec, "triggers": list(t.triggers),
                             "loader_args": args[args.index("--resolver") + 2:] if "--resolver" in args else []}
        out[e.env] = {"tasks": tasks, "bundle": b.path if b is not None else None, "files": files, "image": e.image,
                      "app": e.app}
    return {"envs": out, "warnings": list(plan.warnings)}


# -- comparing ---------------------------------------------------------------------------
def normalize(spec: dict) -> dict:
    """A spec with what legitimately differs blanked: image URIs (the image
    cache keeps its env names), the version and the bundle location."""
    from flyte_build.flyte_adapter.serialization import task_spec_message
    from google.protobuf.json_format import MessageToDict

    # one canonical JSON form (an empty string and an absent field are one value on the wire)
    s = MessageToDict(task_spec_message(copy.deepcopy(spec)), preserving_proto_field_name=True)
    tt = s.get("task_template", {})
    tt.get("id", {}).pop("version", None)
    meta = tt.get("metadata", {})
    if "code_bundle_uri" in meta:
        meta["code_bundle_uri"] = "BUNDLE"
    _blank_container(tt.get("container"), "args", ("--tgz", "--pkl"))
    return s


def _blank_container(cont: dict | None, field: str, bundle_flags: tuple[str, ...]) -> None:
    """The container's image and the values of its version, bundle and image-cache
    flags (in `cont[field]`) blanked: they differ legitimately between the two sides."""
    if not cont:
        return
    cont["image"] = PLACEHOLDER_IMAGE
    args = list(cont.get(field, []))
    for i in range(len(args) - 1):
        if args[i] == "--version":
            args[i + 1] = "VERSION"
        elif args[i] in bundle_flags:
            args[i + 1] = "BUNDLE"
        elif args[i] == "--image-cache":
            args[i + 1] = "envs:" + ",".join(sorted(_image_cache(args[i + 1])))
    cont[field] = args


def normalize_app(app: dict | None) -> dict | None:
    """An App with what legitimately differs blanked, as `normalize` does for a task."""
    if not app or "error" in app:
        return app
    from flyteidl2.app import app_definition_pb2
    from google.protobuf.json_format import MessageToDict, ParseDict

    a = MessageToDict(ParseDict(copy.deepcopy(app), app_definition_pb2.App()), preserving_proto_field_name=True)
    meta = a.get("metadata", {})
    if "code_bundle_uri" in meta:
        meta["code_bundle_uri"] = "BUNDLE"
    _blank_container(a.get("spec", {}).get("container"), "command", ("--tgz",))
    return a


def _image_cache(value: str) -> dict:
    raw = json.loads(gzip.decompress(base64.b64decode(value)))
    return raw.get("image_lookup", raw)


def _diff(a, b, path="") -> list[str]:
    if type(a) is not type(b):
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: {'missing in flyte-build' if k not in b else 'only in flyte-build'}")
            else:
                out.extend(_diff(a[k], b[k], f"{path}.{k}"))
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {a!r} != {b!r}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def compare(ref: dict, ours: BuildAnswer) -> list[str]:
    """Every difference between flyte's answer and flyte-build's: envs, tasks,
    loader args, specs (normalized) and triggers."""
    diffs = []
    if ours.error:
        return [f"flyte-build failed: {ours.error}"]
    if set(ref["envs"]) != set(ours.envs):
        diffs.append(f"envs: flyte {sorted(ref['envs'])} vs flyte-build {sorted(ours.envs)}")
    for name in sorted(set(ref["envs"]) & set(ours.envs)):
        if "app" in ref["envs"][name] or ours.envs[name].get("app"):
            diffs.extend(f"{name}: app{d}" for d in _diff(normalize_app(ref["envs"][name].get("app")),
                                                         normalize_app(ours.envs[name].get("app"))))
            continue
        rt, ot = ref["envs"][name]["tasks"], ours.envs[name]["tasks"]
        if set(rt) != set(ot):
            diffs.append(f"{name}: tasks flyte {sorted(rt)} vs flyte-build {sorted(ot)}")
        for t in sorted(set(rt) & set(ot)):
            if rt[t].get("error"):
                diffs.append(f"{t}: flyte cannot serialize it ({rt[t]['error'][:160]})")
                continue
            if rt[t]["loader_args"] != ot[t]["loader_args"]:
                diffs.append(f"{t}: loader args {rt[t]['loader_args']} vs {ot[t]['loader_args']}")
            diffs.extend(f"{t}: spec{d}" for d in _diff(normalize(rt[t]["spec"]), normalize(ot[t]["spec"])))
            diffs.extend(f"{t}: triggers{d}" for d in _diff(rt[t]["triggers"], ot[t]["triggers"]))
    return diffs


_RUNNER = r"""
import asyncio, inspect, json, sys
from flyte._utils import adjust_sys_path
adjust_sys_path()
sys.path.extend(json.loads(sys.argv[2]))  # what the image has installed (a published library)
from flyte._internal.resolvers.default import DefaultTaskResolver
out = {}
for name, (args, run) in json.loads(sys.argv[1]).items():
    try:
        task = DefaultTaskResolver().load_task(args)
        res = "loaded"
        if run:
            value = task.func()
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
            res = "ran: " + repr(value)
        out[name] = res
    except BaseException as exc:
        out[name] = f"FAILED: {type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def run_bundles(ours: BuildAnswer, run: dict | None = None, timeout: float = 120, image_paths=()) -> dict:
    """{task: "loaded" | "ran: <repr>" | "FAILED: ..."}: each env's bundle
    extracted into an empty directory, its tasks loaded there by flyte's
    resolver in `python -I` (only the bundle and the spec's `_F_SYS_PATH` on
    the path) and, for the tasks `run` names (task -> True), called."""
    from flyte_build.archives.tarsafe import extract_all

    results = {}
    for name, env in sorted(ours.envs.items()):
        if not env["tasks"]:
            continue
        with tempfile.TemporaryDirectory(prefix="flyte-bundle-run-") as tmp:
            if env.get("bundle"):
                with tarfile.open(env["bundle"]) as tf:
                    extract_all(tf, tmp)
            first = next(iter(env["tasks"].values()))["spec"]["task_template"].get("container", {})
            sys_path = {e["key"]: e["value"] for e in first.get("env", [])}.get("_F_SYS_PATH", "")
            # a task with no loader args is not a Python function (a ContainerTask): nothing to load
            todo = {t: [x["loader_args"], bool((run or {}).get(t))] for t, x in env["tasks"].items() if x["loader_args"]}
            if not todo:
                continue
            e = {"PATH": os.environ.get("PATH", ""), "_F_SYS_PATH": sys_path, "HOME": tmp}
            proc = subprocess.run([sys.executable, "-I", "-c", _RUNNER, json.dumps(todo), json.dumps([str(p) for p in image_paths])],
                                  cwd=tmp, env=e,
                                  capture_output=True, text=True, timeout=timeout)
            try:
                results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (IndexError, ValueError):
                for t in todo:
                    results[t] = f"FAILED: exit {proc.returncode}: {proc.stderr[-500:]}"
    return results


@dataclass
class Outcome:
    ref: dict
    ours: BuildAnswer
    diffs: list
    runs: dict

    def only(self, envs) -> "Outcome":
        """This outcome seen from some of its envs (a case of a shared project)."""
        envs = set(envs)

        def mine(key: str) -> bool:
            return key in envs or any(key.startswith(e + ".") for e in envs)

        ref = {**self.ref, "envs": {n: e for n, e in self.ref["envs"].items() if n in envs}}
        ours = BuildAnswer({n: e for n, e in self.ours.envs.items() if n in envs}, self.ours.error, self.ours.warnings)
        diffs = [d for d in self.diffs if d.startswith("envs:") or d.startswith("flyte-build failed") or mine(d.split(":")[0])]
        return Outcome(ref, ours, diffs, {t: r for t, r in self.runs.items() if mine(t)})

    def table_row(self) -> dict:
        loads = sum(1 for v in self.runs.values() if not v.startswith("FAILED"))
        return {"envs": f"{len(self.ours.envs)}/{len(self.ref['envs'])}",
                "tasks": f"{sum(len(e['tasks']) for e in self.ours.envs.values())}/"
                         f"{sum(len(e['tasks']) for e in self.ref['envs'].values())}",
                "loads": f"{loads}/{len(self.runs)}", "diffs": len(self.diffs)}


def differential(project: Path, root: str = ".", path: str = ".", flyte_root: str | None = None,
                 copy_style: str = "loaded_modules", images: dict | None = None, pythonpath=(), run=(),
                 image_paths=(), cache_dir: Path | None = None, ignore_spec=()) -> Outcome:
    """Flyte's answer and flyte-build's for one project, compared, and every
    bundle loaded (and the `run` tasks called) in a clean interpreter."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(project / p) for p in pythonpath])
    else:
        env.pop("PYTHONPATH", None)
    ref = flyte_answer(project / (flyte_root or root), project / path, copy_style, images, env=env)
    ours = build_answer(project / root, project / path, copy_style if copy_style != "loaded_modules" else None, images,
                        cache_dir=cache_dir, env=env)
    diffs = [d for d in compare(ref, ours) if not any(x in d for x in ignore_spec)]
    runs = run_bundles(ours, {t: True for t in run}, image_paths=[project / p for p in image_paths]) \
        if copy_style != "none" else {}
    return Outcome(ref, ours, diffs, runs)


def main(argv: list[str]) -> int:
    if argv[0] == "--build":
        req = json.loads(Path(argv[1]).read_text())
        res = _build_child(req)
        Path(argv[2]).write_text(json.dumps(res))
        return 0
    req = json.loads(Path(argv[0]).read_text())
    res = _child(req)
    Path(argv[1]).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
