"""check:<env> — proof that the env's tasks load from its bundle inside its image.

Depends on `image:<env>`, `bundle:<env>` (unless copy style none) and the env's
serialized task specs (`specs:<env>`). It starts one container of the env's image (`--network
host`, the image's own user and working directory, the spec's environment
variables such as `_F_SYS_PATH`), and there does what Flyte's runtime does
before a task runs (`flyte_adapter.runtime_check.check_in_image`): the bundle is fetched and
extracted for `--tgz`/`--dest`, then every task is loaded with the spec's
resolver and loader args. It also checks that `a0` is on PATH and that the
image's flyte is the version the specs were serialized with.

The result is cached by content: the image digest, the bundle digest and the
specs are the action key, so an unchanged env costs nothing. A failure is exit
1 naming the env, the task and the exception, e.g.
`ModuleNotFoundError: No module named 'six'`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from flyte_build.rule_api import BuildFailed, Inputs, Produced, Request, Rule, read_json

VERSION = "2"  # 2: the task specs are a dependency (specs:<env>), not params
BUNDLE_DIR = "/var/tmp/flyte-build-check"  # where the bundle is mounted in the container
TIMEOUT = 600.0


def applies(env, view) -> bool:
    # an app env has no tasks to load (its server command is not a task's loader args)
    return env.image is not None and not env.is_app


def deps(env, view) -> tuple[str, ...]:
    return (f"image:{env.name}", *((f"bundle:{env.name}",) if view.has_target(f"bundle:{env.name}") else ()), f"specs:{env.name}")


def _option(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args[:-1]):
        if a == name:
            return args[i + 1]
    return None


def _loader(args: list[str]) -> tuple[str | None, list[str]]:
    """(resolver, resolver args): a0's positional arguments follow `--resolver NAME`."""
    for i, a in enumerate(args[:-1]):
        if a == "--resolver":
            return args[i + 1], args[i + 2:]
    return None, []


def _tasks(specs: dict) -> list[dict]:
    """What loading each task needs, from the env's serialized specs."""
    out = []
    for t in specs["env"].get("tasks") or ():
        if "container" not in t["spec"].get("task_template", {}):
            continue  # a connector's task (SQL, a custom config): the backend's connector runs it, no image does
        container = t["spec"]["task_template"]["container"]
        args = list(container.get("args", []))
        resolver, resolver_args = _loader(args)
        out.append({
            "name": t["name"], "resolver": resolver, "resolver_args": resolver_args,
            # a task that is not a Python function (ContainerTask) runs its own command: no resolver
            "program": None if resolver else next(iter(container.get("command") or args), None),
            "dest": _option(args, "--dest"),
            "env": sorted([e["key"], e.get("value", "")] for e in container.get("env", [])),
        })
    return out


def inputs(env, view) -> Inputs:
    return Inputs(
        params={
            "flyte": view.python.flyte,  # the SDK that serialized the specs (the project interpreter's)
            # the containers run on the network the image was built on (config `docker.network`)
            "network": view.cfg.table("docker").get("network") or "host",
        },
        deps=deps(env, view),
    )


def _docker() -> str:
    """The docker client that runs the check's containers: any client runs one
    (which builder builds images is the image kind's concern)."""
    for candidate in (shutil.which("docker"), "/usr/bin/docker"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise BuildFailed("no docker client found on PATH; install Docker to check images")


def _specs(result) -> dict:
    """The specs:<env> dependency's document: {"env": {"tasks": [...]}} (or "app")."""
    doc = read_json(result)
    if not isinstance(doc.get("env"), dict):
        raise BuildFailed(f"{result.target}: malformed specs; run the build again")
    return doc


def run(req: Request) -> Produced:
    from flyte_build.rule_api import runtime_check

    name = req.env.name
    image = req.deps[f"image:{name}"]
    uri = image.meta.get("uri")
    if not uri:
        raise BuildFailed(f"check:{name}: image:{name} names no image to run")
    p = req.params
    specs = _specs(req.deps[f"specs:{name}"])
    tasks = _tasks(specs)
    served = sorted(t["name"] for t in specs["env"].get("tasks") or ())
    missing = sorted({t.name for t in req.env.tasks} - set(served))
    if missing:
        raise BuildFailed(f"check:{name} failed (env `{name}`): discovered tasks have no serialized spec: {', '.join(missing)}")
    python_tasks = [t for t in tasks if t["resolver"]]
    problems = _command_problems(req, uri, [t for t in tasks if not t["resolver"]])
    res: dict = {"flyte": None, "user": None, "cwd": None, "tasks": {}}
    if python_tasks or not req.env.tasks:
        cmd = _docker_run_command(req, uri, python_tasks)
        req.log(f"$ docker run --rm --network {p['network']} ... {uri}  (loading {len(python_tasks)} tasks)")
        res = _run_check(req, cmd, uri, runtime_check.CHECK_MARKER)
        problems += _problems(res, python_tasks, uri, p["flyte"])
    if problems:
        # the first problem on the first line: the summary and a CI log show only that line
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BuildFailed(f"check:{name} failed (env `{name}`): {problems[0].splitlines()[0]}{more}\n  " + "\n  ".join(problems))
    req.log(f"check:{name}: {len(tasks)} tasks load in {uri} (flyte {res['flyte']}, user {res['user']}, cwd {res['cwd']})")
    return Produced(meta={
        "image": uri, "flyte": res["flyte"], "user": res["user"], "cwd": res["cwd"],
        "tasks": served, "check": "passed",
    })


_FIND_PROGRAMS = 'for p; do command -v "$p" >/dev/null 2>&1 || echo "missing:$p"; done; echo "@@checked@@"'


def _command_problems(req: Request, uri: str, tasks: list[dict]) -> list[str]:
    """Tasks that are not Python functions (raw-container tasks) run their own
    command in the image: each command's program must be found there. An image
    without a shell cannot be asked, and is let through with a note in the log."""
    tasks = [t for t in tasks if t["program"]]  # no command: the image's own entrypoint runs, nothing to find
    if not tasks:
        return []
    programs = sorted({t["program"] for t in tasks})
    cmd = [_docker(), "run", "--rm", "--network", req.params["network"], "--entrypoint", "/bin/sh", uri,
           "-c", _FIND_PROGRAMS, "sh", *programs]
    req.log(f"$ docker run --rm ... {uri}  (finding the programs of {len(tasks)} container tasks: {', '.join(programs)})")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [f"the container of {uri} did not finish within {TIMEOUT:g} s"]
    if "@@checked@@" not in proc.stdout:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        if proc.returncode in (126, 127):  # no /bin/sh in the image: nothing to ask it with
            req.log(f"image {uri} has no /bin/sh; the container tasks' programs are not checked ({tail})")
            return []
        return [f"image {uri} did not run: {tail}"]
    missing = {ln.split(":", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("missing:")}
    return [f"task {t['name']} runs {t['program']}, which is not in image {uri}" for t in tasks if t["program"] in missing]


def _docker_run_command(req: Request, uri: str, tasks: list[dict]) -> list[str]:
    """`docker run` of the image with the bundle mounted read-only and the tasks' env vars,
    running the adapter's check program on a JSON payload naming the tasks to load."""
    from flyte_build.rule_api import runtime_check

    p, name = req.params, req.env.name
    bundle = req.deps.get(f"bundle:{name}")
    cmd = [_docker(), "run", "--rm", "--network", p["network"]]
    payload = {"version": "check", "tasks": [{k: t[k] for k in ("name", "resolver", "resolver_args")} for t in tasks]}
    if bundle is not None:
        # a copy readable by the image's user (the cache's blobs may not be)
        local = req.workdir / "bundle.tar.gz"
        shutil.copyfile(bundle.path, local)
        os.chmod(local, 0o644)
        inside = f"{BUNDLE_DIR}/{bundle.digest.split(':')[-1]}.tar.gz"
        cmd += ["-v", f"{local}:{inside}:ro"]
        payload["tgz"] = inside
        payload["dest"] = next((t["dest"] for t in tasks if t.get("dest")), ".")
    envs: dict[str, str] = {}
    for t in tasks:  # the tasks of one env share its env vars
        envs.update(dict(t["env"]))
    for k, v in sorted(envs.items()):
        cmd += ["-e", f"{k}={v}"]
    # run the adapter's check under the interpreter of the image's `a0` (python3 without one)
    launcher = (
        'i=python3; a=$(command -v a0) && i=$(sed -n "1s/^#![[:space:]]*//p" "$a" | cut -d" " -f1); '
        'case "$i" in ""|*/env|*/sh) i=python3;; esac; exec "$i" -c "$1" "$2"'
    )
    return cmd + ["--entrypoint", "/bin/sh", uri, "-c", launcher, "sh", runtime_check.check_program(), json.dumps(payload)]


_HELP_POINTER = re.compile(r"(See|Run) 'docker [a-z]+ --help'")


def _run_check(req: Request, cmd: list[str], uri: str, marker: str) -> dict:
    """Run the container; its output goes to the log, the check's result (the last
    line starting with `marker`) is returned."""
    name = req.env.name
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"check:{name}: the container of {uri} did not finish within {TIMEOUT:g} s") from None
    for line in (proc.stdout + proc.stderr).splitlines():
        if not line.startswith(marker):
            req.log(line)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith(marker)]
    if not found:
        said = proc.stderr.strip().splitlines()
        # not docker's pointer to its help ("See 'docker run --help'." or "Run 'docker run --help' for more information")
        reasons = [ln.strip() for ln in said if ln.strip() and not _HELP_POINTER.match(ln)]
        why = f": {reasons[-1]}" if reasons else ""  # docker's reason (an unreachable engine, a missing image) on the first line
        raise BuildFailed(f"check:{name}: the check did not run in image {uri} (exit {proc.returncode}){why}\n" + "\n".join(said[-12:]))
    return json.loads(found[-1][len(marker):])


def _problems(res: dict, tasks: list[dict], uri: str, flyte: str) -> list[str]:
    """What the check found wrong in the image: no `a0`, no or another flyte, a bundle
    that did not extract, tasks that did not load."""
    problems = []
    if not res.get("a0"):
        problems.append(f"`a0` is not on PATH in image {uri}: the image has no flyte runtime "
                        "(leave install_flyte at its default, or install flyte in the image)")
    if res.get("flyte") is None:
        problems.append(f"flyte is not installed for {res.get('python')} in image {uri}")
    elif res["flyte"] != flyte:
        problems.append(f"image {uri} has flyte {res['flyte']}, but the task specs were serialized with flyte {flyte}")
    if res.get("bundle_error"):
        problems.append(f"fetching and extracting the bundle in image {uri} failed: {res['bundle_error']}")
    for t in tasks:
        err = res.get("tasks", {}).get(t["name"], "not loaded") if res.get("flyte") and not res.get("bundle_error") else None
        if err:
            problems.append(f"task {t['name']} does not load in image {uri}: {err}")
    return problems


RULE = Rule(
    kind="check",
    version=VERSION,
    description="the environment's tasks load from its bundle inside its image, under flyte's runtime",
    inputs=inputs,
    run=run,
    applies=applies,
    deps=deps,
    # a deploy goes ahead on a passed check: from the shared cache only when signed and verified
    needs_signature=True,
)
