"""pex:<env> — the environment's pip requirements as one reproducible PEX.

The requirements are those the env's image installs with pip
(`with_pip_packages`, `with_requirements`), in declaration order, with their
index options. The pex tool resolves them into a zipapp that carries its own
tools (`--include-tools`, so an image can turn it into a venv), with no
bytecode and fixed timestamps: the same requirements give the same bytes.
With `[...flyte.pex] lock = "path/lock.json"` (made by `pex3 lock create`)
the resolve follows the lock, and the lock's bytes are an input.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flyte_build.rule_api import BuildFailed, ConfigTable, Inputs, Produced, Request, Rule, UserError, checks

VERSION = "1"
FIELD = "tool.hatch.build.targets.flyte.pex"
CONFIG = ConfigTable(keys={"lock": checks.string, "python": checks.string, "extra-args": checks.strings})


def options(cfg) -> dict:
    raw = cfg.table("pex")
    checks.check(CONFIG, FIELD, raw)
    return raw  # as written: extra-args stays a list


def pex_tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pex")
    except PackageNotFoundError:
        return "absent"


def requirements(env) -> tuple[list[str], list[str], dict]:
    """(requirement strings, root-relative requirement files, index options) of the env's image."""
    spec = env.image if isinstance(env.image, dict) else {}
    reqs: list[str] = []
    files: list[str] = []
    index: dict = {"index_url": None, "extra_index_urls": [], "pre": False}
    for layer in spec.get("layers") or ():
        if layer.get("type") not in ("PipPackages", "Requirements"):
            continue
        if layer.get("type") == "Requirements":
            files.append(layer["file"])
        reqs.extend(layer.get("packages") or ())
        if layer.get("index_url"):
            index["index_url"] = layer["index_url"]
        for u in layer.get("extra_index_urls") or ():
            if u not in index["extra_index_urls"]:
                index["extra_index_urls"].append(u)
        index["pre"] = index["pre"] or bool(layer.get("pre"))
    return reqs, files, index


def applies(env, view) -> bool:
    reqs, files, _ = requirements(env)
    return bool(reqs or files)


def inputs(env, view) -> Inputs:
    opts = options(view.cfg)
    reqs, req_files, index = requirements(env)
    files = []
    for rel in req_files:
        if not (view.root / rel).is_file():
            raise UserError(f"`{env.name}`: requirements file {rel!r} does not exist")
        files.append((f"req/{rel}", str(view.root / rel)))
    lock = opts.get("lock")
    if lock:
        if not (view.root / lock).is_file():
            raise UserError(f"Field {FIELD}.lock: {lock!r} does not exist; create it with `pex3 lock create -r requirements.txt -o {lock}`")
        files.append(("lock.json", str(view.root / lock)))
    return Inputs(
        files=tuple(files),
        params={
            "requirements": reqs,
            "index": index,
            "pex": pex_tool_version(),
            "python": opts.get("python"),
            "extra_args": list(opts.get("extra-args", ())),
        },
    )


def run(req: Request) -> Produced:
    p = req.params
    out = req.workdir / "requirements.pex"
    cmd = [sys.executable, "-m", "pex", *p["requirements"], "-o", str(out), "--include-tools", "--no-compile", "--no-use-system-time", "--disable-cache"]
    for f in req.files:
        if f.name.startswith("req/"):
            cmd += ["-r", f.path]
        elif f.name == "lock.json":
            cmd += ["--lock", f.path]
    if p["index"]["index_url"]:
        cmd += ["--no-pypi", "--index-url", p["index"]["index_url"]]
    for u in p["index"]["extra_index_urls"]:
        cmd += ["--index-url", u]
    if p["index"]["pre"]:
        cmd.append("--pre")
    if p["python"]:
        cmd += ["--python", p["python"]]
    cmd += p["extra_args"]
    req.log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=req.workdir)
    for line in (proc.stdout + proc.stderr).splitlines():
        req.log(line)
    if proc.returncode != 0:
        said = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        # pip's own ERROR line says why (a requirement no index has); pex's long command line does not
        why = next((ln for ln in reversed(said) if "ERROR" in ln), said[-1] if said else "")
        tail = "\n".join(said[-20:])
        raise BuildFailed(f"{req.target}: pex failed (exit {proc.returncode}): {why}\n{tail}")
    return Produced(files=(("requirements.pex", Path(out)),), meta={"requirements": p["requirements"], "pex_version": p["pex"]})


RULE = Rule(
    kind="pex",
    version=VERSION,
    description="the environment's pip requirements as a reproducible PEX",
    inputs=inputs,
    run=run,
    applies=applies,
    outputs=(("requirements.pex",),),
    artifacts=True,
    # what an index served cannot be checked here without building it again: a
    # shared pex is used only when signed by a trusted writer
    needs_signature=True,
)
