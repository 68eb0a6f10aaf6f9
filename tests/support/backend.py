"""Run deployed tasks the way Flyte's backend does, on the local parts.

A task runs from the TaskSpec the control plane received: `docker run
--network host IMAGE <container.args>` with the `{{.input}}`-style templates
filled, inputs.pb written to moto's S3 with flyte's own converters
(tests/support/flyte_io.py), `--tgz` the bundle's real S3 URI (already in the
args), and the variables the backend sets (`_U_RUN_BASE`, `_U_ORG_NAME`,
`FLYTE_INTERNAL_EXECUTION_PROJECT`/`_DOMAIN`, `RUN_NAME`, `ACTION_NAME`,
`_U_EP_OVERRIDE` for the controller, and the S3 endpoint). A parent's child
actions arrive through the control plane's QueueService; `serve_children()`
runs each in its own image from the spec the parent enqueued and reports it
terminal on the parent's StateService Watch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import controlplane

FLYTE_IO = Path(__file__).resolve().parent / "flyte_io.py"
RUN_START = "2026-11-30T00:00:00+00:00"
TIMEOUT = 900


@dataclass
class Action:
    run: str
    name: str
    task: str  # the task's name in the spec
    image: str
    output_prefix: str
    proc: subprocess.CompletedProcess | None = None
    parent: str | None = None


@dataclass
class Backend:
    cp: controlplane.ControlPlane
    project: str
    domain: str
    org: str = "local"
    actions: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bucket(self) -> str:
        return controlplane.BUCKET

    def s3_env(self) -> dict[str, str]:
        return {
            "FLYTE_AWS_ENDPOINT": self.cp.s3_endpoint, "FLYTE_AWS_ACCESS_KEY_ID": "testing",
            "FLYTE_AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        }

    def run_base(self, run: str) -> str:
        return f"s3://{self.bucket}/runs/{run}"

    # -- one action ---------------------------------------------------------
    def command(self, spec, run: str, action: str, inputs_uri: str, output_prefix: str, run_base: str) -> list[str]:
        """The `docker run` of `spec` as the backend starts it."""
        c = spec.task_template.container
        values = {
            "{{.input}}": inputs_uri, "{{.outputPrefix}}": output_prefix,
            "{{.rawOutputDataPrefix}}": f"s3://{self.bucket}/raw/{run}/{action}",
            "{{.checkpointOutputPrefix}}": f"s3://{self.bucket}/checkpoints/{run}/{action}",
            "{{.prevCheckpointPrefix}}": "", "{{.runName}}": run, "{{.actionName}}": action,
            "{{.runStartTime}}": RUN_START,
        }
        args = []
        for a in c.args:
            for k, v in values.items():
                a = a.replace(k, v)
            args.append(a)
        left = [a for a in args if "{{" in a]
        assert not left, f"templates the backend fills were left in the args: {left}"
        env = {kv.key: kv.value for kv in c.env}
        env.update({
            "_U_RUN_BASE": run_base, "_U_ORG_NAME": self.org, "RUN_NAME": run, "ACTION_NAME": action,
            "FLYTE_INTERNAL_EXECUTION_PROJECT": self.project, "FLYTE_INTERNAL_EXECUTION_DOMAIN": self.domain,
            "_U_EP_OVERRIDE": self.cp.endpoint, "_U_INSECURE": "true", **self.s3_env(),
        })
        cmd = ["docker", "run", "--rm", "--network", "host"]
        for k, v in sorted(env.items()):
            cmd += ["-e", f"{k}={v}"]
        return [*cmd, c.image, *args]

    def run_spec(self, spec, run: str, action: str, inputs_uri: str, output_prefix: str, run_base: str,
                 parent: str | None = None) -> Action:
        cmd = self.command(spec, run, action, inputs_uri, output_prefix, run_base)
        rec = Action(run, action, spec.task_template.id.name, spec.task_template.container.image, output_prefix, parent=parent)
        rec.proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        with self._lock:
            self.actions.append(rec)
        return rec

    # -- child actions ------------------------------------------------------
    def serve_children(self) -> None:
        self.cp.on_enqueue = self._child

    def _child(self, req) -> None:
        prefix = f"{req.run_output_base}/{req.action_id.name}/1"
        try:
            rec = self.run_spec(req.task.spec, req.action_id.run.name, req.action_id.name, req.input_uri, prefix,
                                req.run_output_base, parent=req.parent_action_name)
            ok = rec.proc.returncode == 0
            self.cp.finish(req, prefix, None if ok else f"exit {rec.proc.returncode}: {rec.proc.stderr[-500:]}")
        except Exception as exc:  # noqa: BLE001 - the parent must hear of it, not hang
            self.cp.finish(req, prefix, f"{type(exc).__name__}: {exc}")

    # -- flyte's formats, in a child process at the project root -----------------
    def flyte_io(self, root: Path, mode: str, items: list[dict]) -> list[dict]:
        env = {**os.environ, **self.s3_env(), "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        proc = subprocess.run([sys.executable, str(FLYTE_IO), mode, json.dumps(items)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@flyte-io@@")]
        assert lines, f"flyte_io {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        return json.loads(lines[-1][len("@@flyte-io@@"):])

    def run_tasks(self, root: Path, runs: list[dict], jobs: int = 2) -> list[dict]:
        """Run each {"run", "spec", "module", "task", "kwargs"} as the top action `a0` of
        its run (`jobs` at once); each gets "local" (flyte.run locally), "remote"
        ({"value"} or {"error"}) and "action" added."""
        from concurrent.futures import ThreadPoolExecutor

        for r in runs:
            r["base"] = self.run_base(r["run"])
            r["inputs_uri"], r["prefix"] = f"{r['base']}/a0/inputs.pb", f"{r['base']}/a0/1"
        local = self.flyte_io(root, "prepare", [{k: r[k] for k in ("module", "task", "kwargs", "inputs_uri")} for r in runs])
        with ThreadPoolExecutor(jobs) as pool:
            actions = list(pool.map(lambda r: self.run_spec(r["spec"], r["run"], "a0", r["inputs_uri"], r["prefix"], r["base"]), runs))
        remote = self.flyte_io(root, "outputs", [{"module": r["module"], "task": r["task"], "output_prefix": r["prefix"]} for r in runs])
        for r, lo, re_, a in zip(runs, local, remote, actions):
            r.update(local=lo["local"], remote=re_, action=a)
        return runs
