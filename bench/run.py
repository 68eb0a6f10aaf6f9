"""Time flyte-build against its baselines on synthetic monorepos; write BENCHMARKS.md.

Every scenario runs in a fresh process, as CI would run it; its wall time
(process start included) and peak RSS (the process and the children it
waited for, e.g. discovery's child) come from `os.wait4`. Repetitions are
interleaved (baseline, ours, baseline, ...) so the machine's noise hits both
sides alike; the table holds medians and ratios from the same run, and the
load average of the machine as each process started (a warning above 1;
`--max-load N` refuses to start above N). Where flyte-build has a resident
process, the cold-process rows run with `--no-daemon` and two rows of their
own (`bench.resident`) go through it.

    python -m bench.run --sizes small,medium,large --repeat 5 --out BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import resident, tool_venv
from .generate import Shape, generate

SIZES = {"small": Shape(10, 500), "medium": Shape(50, 5000), "large": Shape(200, 20000)}
REPO_ROOT = Path(__file__).resolve().parent.parent

# Row order of each size's table; the smoke test checks every one is there.
SCENARIOS = (
    "flyte bundling (baseline)",
    "tar \\| gzip floor (baseline)",
    "python -c 'import flyte' (baseline)",
    "python -c pass (process start)",
    "cold build, all bundles",
    "no-op rebuild",
    "edit 1 service file",
    "edit 1 shared-lib file",
    *resident.ROWS,
    "affected --since HEAD",
    "fresh machine, warm shared cache: build",
    "fresh machine, warm shared cache: affected --since HEAD~1",
)
SHARED = SCENARIOS[-2:]
# --skip groups: `affected --since HEAD`, the fresh-machine (shared cache) pair, the shared-library edit
SKIPPABLE = ("affected", "shared", "lib-edit")


def _byte_compile() -> None:
    """Byte-compile flyte-build's own modules and built-in rules, as pip does when
    it installs a wheel (flyte's are, in site-packages). The scenarios run with
    PYTHONDONTWRITEBYTECODE=1 (the generated trees must stay as generated), so
    an editable checkout would otherwise compile flyte-build from source in
    every process: ~0.1 s of each run here, a cost no installed copy pays."""
    import compileall

    import flyte_build
    from flyte_build.engine.rulesets import builtin_dir

    for d in {Path(flyte_build.__file__).parent, Path(builtin_dir())}:
        compileall.compile_dir(str(d), quiet=1)


@dataclass(frozen=True)
class Sample:
    seconds: float
    max_rss_kb: int
    info: dict = field(default_factory=dict)
    cpu: float = 0.0  # user + sys of the process and its waited-for children: less noisy than wall time
    load: float = 0.0  # the machine's 1-minute load average when the process started

    def with_info(self, info: dict) -> "Sample":
        return Sample(self.seconds, self.max_rss_kb, info, self.cpu, self.load)


def measure(cmd: list[str] | str, cwd: Path, env: dict | None = None, shell: bool = False) -> tuple[Sample, str]:
    """Wall time and peak RSS of one fresh process (its waited-for children included)."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # read both pipes fully before reaping, so the child never blocks on a full pipe
    out, err = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return Sample(seconds, usage.ru_maxrss, cpu=usage.ru_utime + usage.ru_stime, load=load), out.decode(errors="replace")


def _drain(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    # communicate() would reap the child itself and lose its rusage; read the pipes with threads instead
    import threading

    bufs: dict[str, bytes] = {}

    def read(name, stream):
        bufs[name] = stream.read()
        stream.close()

    threads = [threading.Thread(target=read, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return bufs["out"], bufs["err"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"})


def _has_affected() -> bool:
    r = subprocess.run([sys.executable, "-m", "flyte_build", "affected", "--help"], capture_output=True)
    return r.returncode == 0


def _edit(path: Path, n: int) -> None:
    with open(path, "a") as f:
        f.write(f"\n# bench edit {n}\n")


def _bundle_members(build_json: str) -> list[str]:
    names: set[str] = set()
    for t in json.loads(build_json)["targets"]:
        if t.get("path"):
            with tarfile.open(t["path"]) as tf:
                names.update(m.name for m in tf.getmembers() if m.isfile())
    return sorted(names)


TOOL_PASS = "python -c pass (tool venv)"  # shown in the note of the process-start row


def run_size(name: str, shape: Shape, repeat: int, work: Path, log=print, only: str | None = None,
             skip: frozenset = frozenset(), tool: Path | None = None) -> dict:
    """One size's samples; `tool` is a tool venv's `flyte-build` (see
    bench.tool_venv) that runs flyte-build's rows in place of the checkout."""
    if only in ("cold", "resident"):
        skip = skip | frozenset(SKIPPABLE)  # shown as not run
    repo = work / name / "repo"
    shutil.rmtree(repo, ignore_errors=True)  # a reused --work: the same tree again, not the last run's edits on it
    summary = generate(repo, shape)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "synthetic")
    # the rows of a process that starts cold: without the resident process where there is one
    cli = [str(tool)] if tool else [sys.executable, "-m", "flyte_build"]
    fb = [*cli, "build", "--json", *resident.no_daemon_flag()]
    has_resident = resident.available()
    base_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    affected = "affected" not in skip and _has_affected()
    samples: dict[str, list[Sample]] = {s: [] for s in (*SCENARIOS, TOOL_PASS)}
    service_file = repo / "services" / "svc_000" / "mod_000.py"  # head of a depends_on chain
    lib_file = repo / "libs" / "lib_000" / "m_000.py"
    file_list = work / name / "bundle-files.txt"
    if only == "resident":
        _resident_only(repo, work / name, repeat, base_env, cli, tool, service_file, samples, lambda m: log(f"[{name}] {m}"))
    for rep in range(repeat if only in (None, "cold") else 0):
        log(f"[{name}] repetition {rep + 1}/{repeat}")
        cache = work / name / f"cache-{rep}"
        env = {**base_env, "FLYTE_BUILD_CACHE_DIR": str(cache)}
        out = work / name / "flyte-out"
        shutil.rmtree(out, ignore_errors=True)
        s, text = measure([sys.executable, "-m", "bench.flyte_baseline", str(repo), str(out)], REPO_ROOT, base_env)
        samples["flyte bundling (baseline)"].append(s.with_info(json.loads(text.strip().splitlines()[-1])))

        s, text = measure(fb, repo, env)
        built = json.loads(text)
        samples["cold build, all bundles"].append(s.with_info(_counts(built)))
        if rep == 0:
            file_list.write_text("\n".join(_bundle_members(text)) + "\n")
        if only == "cold":  # flyte's path and the cold build, nothing else
            shutil.rmtree(cache, ignore_errors=True)
            continue

        s, text = measure(f"tar -cf - -T {file_list} | gzip -6 > {work / name / 'floor.tar.gz'}", repo, base_env, shell=True)
        samples["tar \\| gzip floor (baseline)"].append(s.with_info({"files": len(file_list.read_text().split())}))

        time.sleep(2.1)  # past the stat cache's racy window, as in a real edit-build loop
        s, text = measure(fb, repo, env)
        samples["no-op rebuild"].append(s.with_info(_counts(json.loads(text))))

        s, _ = measure([sys.executable, "-c", "import flyte"], repo, base_env)
        samples["python -c 'import flyte' (baseline)"].append(s)
        _process_start(repo, base_env, tool, samples)

        _edit(service_file, rep)
        s, text = measure(fb, repo, env)
        samples["edit 1 service file"].append(s.with_info(_counts(json.loads(text))))
        if affected:  # with the service edit only: its answer is the chain below the edited env
            # a cold process, as the rows around it (through a resident process its work is not in the CPU column)
            s, text = measure([*cli, "affected", "--since", "HEAD", "--json", *resident.no_daemon_flag()], repo, env)
            envs = json.loads(text).get("envs", [])
            samples["affected --since HEAD"].append(s.with_info({"affected_envs": len(envs)}))
        if "lib-edit" not in skip:
            _edit(lib_file, rep)
            s, text = measure(fb, repo, env)
            samples["edit 1 shared-lib file"].append(s.with_info(_counts(json.loads(text))))
        _git(repo, "checkout", "-q", "--", ".")  # undo the edits: every repetition edits the same clean tree
        if has_resident:
            resident.run(repo, env, cli, lambda: resident.code_edit(service_file, 1000 + rep), samples, measure, _counts)
            _git(repo, "checkout", "-q", "--", ".")
        shutil.rmtree(cache, ignore_errors=True)
    if only == "fresh":
        _baselines_only(repo, repeat, base_env, samples, lambda m: log(f"[{name}] {m}"))
    s3 = None if "shared" in skip else _moto()
    if s3 is not None:
        _shared_machine(name, repo, work, repeat, s3, base_env, cli, service_file, samples, log)
    return {"name": name, "shape": shape.__dict__, "tree": summary, "samples": samples, "affected": affected,
            "resident": has_resident, "skipped": sorted(skip), "tool_venv": str(tool) if tool else None}


def _process_start(repo: Path, base_env: dict, tool: Path | None, samples: dict) -> None:
    """`python -c pass` of the interpreter flyte's rows run with and, when
    flyte-build's rows run from a tool venv, of that venv's."""
    s, _ = measure([sys.executable, "-c", "pass"], repo, base_env)
    samples["python -c pass (process start)"].append(s)
    if tool:
        s, _ = measure([str(tool_venv.python(tool)), "-c", "pass"], repo, base_env)
        samples[TOOL_PASS].append(s)


def _resident_only(repo: Path, where: Path, repeat: int, base_env: dict, cli: list[str], tool: Path | None,
                   service_file: Path, samples: dict, log) -> None:
    """`--only resident`: the resident rows and the interpreters' start, each
    repetition on a clean tree with a cache of its own."""
    for rep in range(repeat):
        log(f"resident rows {rep + 1}/{repeat}")
        cache = where / f"cache-resident-{rep}"
        env = {**base_env, "FLYTE_BUILD_CACHE_DIR": str(cache)}
        _process_start(repo, base_env, tool, samples)
        resident.run(repo, env, cli, lambda: resident.code_edit(service_file, 2000 + rep), samples, measure, _counts)
        _git(repo, "checkout", "-q", "--", ".")
        shutil.rmtree(cache, ignore_errors=True)


def _baselines_only(repo: Path, repeat: int, base_env: dict, samples: dict, log) -> None:
    """`--only fresh`: flyte's path (and the interpreter's start) measured in the
    same run as the fresh-machine scenarios, so their ratios stand."""
    for rep in range(repeat):
        log(f"baselines {rep + 1}/{repeat}")
        out = repo.parent / "flyte-out"
        shutil.rmtree(out, ignore_errors=True)
        s, text = measure([sys.executable, "-m", "bench.flyte_baseline", str(repo), str(out)], REPO_ROOT, base_env)
        samples["flyte bundling (baseline)"].append(s.with_info(json.loads(text.strip().splitlines()[-1])))
        s, _ = measure([sys.executable, "-c", "import flyte"], repo, base_env)
        samples["python -c 'import flyte' (baseline)"].append(s)
        s, _ = measure([sys.executable, "-c", "pass"], repo, base_env)
        samples["python -c pass (process start)"].append(s)


def _shared_machine(name, repo, work, repeat, s3, base_env, cli, service_file, samples, log) -> None:
    """CI on a fresh machine: another checkout path, an empty local cache, a shared
    cache (moto's S3) that another machine filled by building the base commit and
    the head commit (one service edit on top)."""
    from flyte_build.stores import signing

    # protected-branch CI: it publishes signed and reads with the verify key (shared
    # discovery results and affected summaries are read only when signed and verified)
    private, public = signing.keygen()
    env = {**base_env, **s3["env"], "CI": "true", signing.SIGNING_KEY_ENV: private, signing.VERIFY_KEYS_ENV: public}
    url = f"s3://{s3['bucket']}/{name}-{os.getpid()}"
    _edit(service_file, 999)
    _git(repo, "commit", "-q", "-am", "head: one service edit")
    def git_out(*args):
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    head, branch = git_out("rev-parse", "HEAD"), git_out("symbolic-ref", "--short", "HEAD")
    # machine A: builds the base commit, then the head commit, publishing both
    for rev in (f"{head}~1", head):
        _git(repo, "checkout", "-q", rev)
        cache_a = work / name / "machine-a-cache"
        measure([*cli, "--cache", url, "build", "--json", *resident.no_daemon_flag()], repo, {**env, "FLYTE_BUILD_CACHE_DIR": str(cache_a)})
    _git(repo, "checkout", "-q", branch)
    # machine B: a clone at another path, checked out at the head commit
    clone = work / name / "elsewhere" / "checkout"
    shutil.rmtree(clone, ignore_errors=True)
    clone.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    for rep in range(repeat):
        log(f"[{name}] fresh machine {rep + 1}/{repeat}")
        for sc, args in ((SHARED[0], [*cli, "--cache", url, "build", "--json", *resident.no_daemon_flag()]),
                         (SHARED[1], [*cli, "--cache", url, "affected", "--since", "HEAD~1", "--json"])):
            cache_b = work / name / f"machine-b-cache-{rep}"
            shutil.rmtree(cache_b, ignore_errors=True)
            s, text = measure(args, clone, {**env, "FLYTE_BUILD_CACHE_DIR": str(cache_b)})
            doc = json.loads(text)
            if sc == SHARED[0]:
                info = {**_counts(doc), "how": doc["discovery"]["how"]}
            else:
                info = {"affected_envs": len(doc.get("envs", []))}
            samples[sc].append(s.with_info(info))
            shutil.rmtree(cache_b, ignore_errors=True)
    _git(repo, "reset", "-q", "--hard", "HEAD~1")


_MOTO: dict = {}


def _moto() -> dict | None:
    """moto's S3 server on a free loopback port (started once; stopped at exit)."""
    if "s3" in _MOTO:
        return _MOTO["s3"]
    import atexit
    import socket
    import urllib.request

    exe = shutil.which("moto_server")
    if exe is None:
        _MOTO["s3"] = None
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.terminate)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="flyte-bench")
    _MOTO["s3"] = {"env": env, "bucket": "flyte-bench"}
    return _MOTO["s3"]


def _counts(doc: dict) -> dict:
    ts = doc["targets"]
    return {"targets": len(ts), "built": sum(t["status"] == "built" for t in ts), "cached": sum(t["status"] == "cached" for t in ts)}


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def render(results: list[dict], repeat: int, argv: list[str]) -> str:
    lines = ["# Benchmarks", ""]
    lines += [
        f"Machine: {platform.node() and 'shared CI-class host'}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, flyte {_flyte_version()}. "
        f"The host is shared with other jobs: wall times are noisy, so read the ratios (both sides measured "
        f"interleaved in the same run) and the medians of {repeat} runs.",
        "",
        f"Reproduce: `python -m bench.run {' '.join(argv)}`",
        "",
        "Every figure is one fresh process, start-up included; peak RSS is the process and its waited-for children "
        "(discovery's child imports the user's modules). Ratios are baseline time / our time (>1: we are faster).",
        "",
    ]
    for res in results:
        tree = res["tree"]
        smp = res["samples"]
        med = {k: _median([s.seconds for s in v]) for k, v in smp.items() if v}
        flyte_t = med.get("flyte bundling (baseline)")
        floor_t = med.get("tar \\| gzip floor (baseline)")
        imp_t = med.get("python -c 'import flyte' (baseline)")
        lines += [
            f"## {res['name']}: {tree['envs']} envs, {tree['files']} files ({max(len(v) for v in smp.values())} repetitions)",
            "",
            "| scenario | median s | min s | max s | vs flyte bundling | vs tar\\|gzip | vs import flyte | peak RSS MB | note |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for sc in SCENARIOS:
            v = smp.get(sc) or []
            if not v:
                skipped = "lib-edit" if "shared-lib" in sc else "affected" if sc.startswith("affected") else "shared" if sc in SHARED else None
                why = ("not run (--skip)" if skipped in res.get("skipped", ()) else "`flyte-build affected` had not landed when this ran"
                       if sc.startswith("affected") and not res["affected"] else "moto_server is not installed" if sc in SHARED
                       else "the resident process (`flyte-build daemon`) had not landed when this ran"
                       if sc in resident.ROWS and not res.get("resident") else "not run")
                lines.append(f"| {sc} | - | - | - | - | - | - | - | {why} |")
                continue
            m = med[sc]
            ts = [s.seconds for s in v]
            rss = max(s.max_rss_kb for s in v) / 1024
            note = _note(v[-1].info)
            if sc == "python -c pass (process start)" and smp.get(TOOL_PASS):
                tool_pass = smp[TOOL_PASS]
                note = (f"flyte-build's tool venv's: median {_median([x.seconds for x in tool_pass]):.3f} s, "
                        f"CPU {_median([x.cpu for x in tool_pass]):.3f} s")
            ratios = " | ".join(f"{b / m:.2f}x" if b else "-" for b in (flyte_t, floor_t, imp_t))
            lines.append(f"| {sc} | {m:.3f} | {min(ts):.3f} | {max(ts):.3f} | {ratios} | {rss:.0f} | {note} |")
        cpu = [(sc.replace("\\|", "|"), _median([x.cpu for x in smp[sc]])) for sc in SCENARIOS if smp.get(sc)]
        if res.get("tool_venv"):
            lines += ["", "flyte-build's rows ran from a tool venv (`--tool-venv`: its own venv without the system's "
                      "site-packages, this checkout installed into it, not editable, as `pipx` or `uv tool` "
                      "installs it); flyte's rows from the checkout's interpreter."]
        lines += ["", "CPU time (user + sys, the process and its waited-for children; medians): "
                  + "; ".join(f"{sc} {c:.3f} s" for sc, c in cpu) + ".", "", _load_line(smp), ""]
    return "\n".join(lines) + "\n"


NOTES_MARKER = "<!-- notes: everything below is written by hand and kept by bench.run -->"


def _kept_notes(out: Path) -> str:
    """The hand-written part of an existing BENCHMARKS.md (targets, profiles),
    which a rerun of the tables must not lose."""
    try:
        text = out.read_text()
    except FileNotFoundError:
        return ""
    i = text.find(NOTES_MARKER)
    return "\n" + text[i:] if i >= 0 else ""


def _load_line(samples: dict) -> str:
    """The machine's 1-minute load average as each measured process started: the
    figures are a quiet machine's only when it stayed at or under 1."""
    loads = [x.load for v in samples.values() for x in v]
    if not loads:
        return ""
    line = (f"Load average (1 minute) as each measured process started: median {_median(loads):.2f}, "
            f"min {min(loads):.2f}, max {max(loads):.2f}.")
    if max(loads) > QUIET_LOAD:
        line += f" **Above {QUIET_LOAD:g} during this run: not a quiet machine's figures.**"
    return line


QUIET_LOAD = 1.0


def _note(info: dict) -> str:
    if "built" in info:
        how = f", discovery {info['how']}" if "how" in info else ""
        rss = f", resident process peak RSS {info['resident_rss_mb']:.0f} MB" if info.get("resident_rss_mb") else ""
        watch = {True: ", answered from its watch (no tree stat)", False: ", not answered from its watch"}.get(info.get("watch_answered"), "")
        return f"{info['built']} built, {info['cached']} cached of {info['targets']}{how}{rss}{watch}"
    if "affected_envs" in info:
        return f"{info['affected_envs']} envs affected"
    if "files" in info:
        return f"{info['files']} files"
    return ""


def _flyte_version() -> str:
    from importlib.metadata import version

    return version("flyte")


def _check_load(max_load: float | None, ap: argparse.ArgumentParser) -> None:
    load = os.getloadavg()[0]
    if max_load is not None and load > max_load:
        ap.exit(2, f"bench.run: error: the 1-minute load average is {load:.2f}, above --max-load {max_load:g}: "
                "wait for a quiet machine\n")
    if load > QUIET_LOAD:
        print(f"bench.run: warning: the 1-minute load average is {load:.2f} (above {QUIET_LOAD:g}): the figures "
              "will not be a quiet machine's (the tables say so)", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,medium,large")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--large-repeat", type=int, help="repetitions at the large size (default: --repeat)")
    ap.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--json", type=Path, help="also write the raw samples here")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one, removed after)")
    ap.add_argument("--only", choices=["fresh", "cold", "resident"], help="fresh: only the fresh-machine scenarios and "
                    "flyte's path beside them; cold: only flyte's path and the cold build; resident: only the resident "
                    "process's rows and `python -c pass`")
    ap.add_argument("--tool-venv", action="store_true", help="run flyte-build's rows from a venv of its own with this "
                    "checkout installed (not editable), as pipx or `uv tool` installs it; built once in the work directory")
    ap.add_argument("--skip", default="", help=f"scenario groups not to run, comma-separated: {', '.join(SKIPPABLE)}")
    ap.add_argument("--max-load", type=float, help="refuse to start when the 1-minute load average is above this "
                    f"(default: start anyway, warn above {QUIET_LOAD:g}; the tables record the load either way)")
    a = ap.parse_args(argv)
    skip = frozenset(x.strip() for x in a.skip.split(",") if x.strip())
    if skip - set(SKIPPABLE):
        ap.error(f"unknown --skip group {sorted(skip - set(SKIPPABLE))[0]!r}; choose from {', '.join(SKIPPABLE)}")
    _check_load(a.max_load, ap)
    _byte_compile()
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        ap.error(f"unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}")
    work = a.work or Path(tempfile.mkdtemp(prefix="flyte-build-bench-"))
    results = []
    try:
        tool = tool_venv.build(work, log=lambda m: print(m, file=sys.stderr, flush=True)) if a.tool_venv else None
        for s in sizes:
            n = a.large_repeat if s == "large" and a.large_repeat else a.repeat
            results.append(run_size(s, SIZES[s], n, work, log=lambda m: print(m, file=sys.stderr, flush=True),
                                    only=a.only, skip=skip, tool=tool))
            # written after each size, so a long large run never loses the smaller ones
            a.out.write_text(render(results, a.repeat, argv) + _kept_notes(a.out))
            if a.json:
                a.json.write_text(json.dumps([{**r, "samples": {k: [x.__dict__ for x in v] for k, v in r["samples"].items()}} for r in results], indent=1))
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
