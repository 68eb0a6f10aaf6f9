"""What a deploy plan holds: each env's version, image, bundle and rendered
task specs, in deploy order, and the envs it could not plan (plain data; the
dry run's `--json` and hatch's `flyte:plan` print `Plan.to_json`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flyte_build.rule_api import tool_version

FORMAT = 2  # of the plan's JSON and of the version key (versions.env_version)


@dataclass(frozen=True)
class TaskPlan:
    name: str
    spec: dict  # the TaskSpec in protobuf's JSON form
    triggers: tuple = ()  # TaskTrigger messages in protobuf's JSON form, deployed with the task


@dataclass(frozen=True)
class EnvPlan:
    env: str
    version: str
    image: str | None
    bundle: str | None  # sha256:<hex>, None for copy style none
    tasks: tuple[TaskPlan, ...]
    depends_on: tuple[str, ...] = ()
    images: dict = field(default_factory=dict)  # every env image the specs name (own and dependencies')
    bundle_uri: str | None = None
    app: dict | None = None  # an app env's App message (protobuf's JSON form); it has no tasks
    # the env's check: target as a deploy would find it: "passed" (cached for these
    # exact image, bundle and specs), "to run", "off" (deploy --no-check) or "none"
    check: str | None = None

    def record(self) -> dict:
        rec = {
            "target": f"deploy:{self.env}", "kind": "deploy", "env": self.env, "version": self.version,
            "image": self.image, "bundle": self.bundle, "bundle_uri": self.bundle_uri,
            "depends_on": list(self.depends_on), "images": dict(self.images), "check": self.check,
            "tasks": [{"name": t.name, "spec": t.spec, "triggers": list(t.triggers)} for t in self.tasks],
            "env_kind": "app" if self.app is not None else "task",
        }
        if self.app is not None:
            rec["app"] = self.app
        return rec


@dataclass(frozen=True)
class Plan:
    envs: tuple[EnvPlan, ...]  # deploy order: dependencies first
    waves: tuple[tuple[str, ...], ...]
    project: str | None = None
    domain: str | None = None
    warnings: tuple[str, ...] = ()
    # dependencies of planned envs that are not deployed (`assume_deployed`,
    # e.g. unaffected since --changed-since REV), in deploy order
    left_out: tuple[str, ...] = ()
    # (env, why) of the selected envs that cannot be planned: those flyte cannot
    # serialize (`failed`) and those depending on one (`skipped`); the rest is planned
    failed: tuple[tuple[str, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "tool": tool_version, "project": self.project, "domain": self.domain,
            "order": [e.env for e in self.envs], "waves": [list(w) for w in self.waves],
            "envs": [e.record() for e in self.envs], "left_out": list(self.left_out), "warnings": list(self.warnings),
            "failed": [{"env": n, "error": e} for n, e in self.failed],
            "skipped": [{"env": n, "error": e} for n, e in self.skipped],
        }

