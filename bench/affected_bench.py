"""Time `flyte-build affected --since REV` on a synthetic monorepo.

Three figures, each a fresh process (start-up included), medians of --repeat:

- cold: an empty cache: discovery of the working tree, `git archive` of REV,
  discovery there, both sides' inputs;
- first after an edit: REV's summary is cached, but the edited module is a
  discovery input, so the working tree is discovered again;
- warm: discovery cached and REV's summary cached — the steady state of a
  developer's loop and of CI with a warm cache.

    python -m bench.affected_bench --envs 50 --files 5000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .generate import Shape, generate


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={
        **os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"})


def _affected(repo: Path, env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flyte_build", "affected", "--since", "HEAD", "--json"],
                          cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return seconds, json.loads(proc.stdout)


def run(shape: Shape, repeat: int, work: Path) -> dict:
    repo = work / "repo"
    tree = generate(repo, shape)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "synthetic")
    edited = repo / "libs" / "lib_000" / "m_000.py"
    original = edited.read_text()
    cold, first, warm = [], [], []
    affected_count = 0
    for rep in range(repeat):
        cache = work / f"cache-{rep}"
        env = {**os.environ, "FLYTE_BUILD_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
        edited.write_text(original)
        time.sleep(2.1)  # past the stat cache's racy window
        s, _ = _affected(repo, env)  # nothing changed: discovery of the tree only
        edited.write_text(original + f"\n# bench edit {rep}\n")
        shutil.rmtree(cache / "affected", ignore_errors=True)
        s, doc = _affected(repo, env)
        cold.append(s)  # REV exported and discovered; the edited tree discovered again
        edited.write_text(original + f"\n# bench edit {rep}b\n")
        s, doc = _affected(repo, env)
        first.append(s)  # REV summary cached; the tree rediscovered after the edit
        time.sleep(2.1)
        s, doc = _affected(repo, env)
        warm.append(s)
        affected_count = len(doc["targets"])
        shutil.rmtree(cache, ignore_errors=True)
    edited.write_text(original)
    return {"tree": tree, "cold": cold, "first": first, "warm": warm, "affected_targets": affected_count}


def render(res: dict, shape: Shape, repeat: int) -> str:
    med = lambda xs: f"{statistics.median(xs):.2f}"  # noqa: E731
    t = res["tree"]
    return "\n".join([
        "## affected",
        "",
        f"`flyte-build affected --since HEAD --json` after editing one shared-library module, on the synthetic "
        f"monorepo of {t['envs']} envs and {t['files']} files ({res['affected_targets']} targets affected); "
        f"fresh processes, medians of {repeat} (min-max). Reproduce: "
        f"`python -m bench.affected_bench --envs {shape.envs} --files {shape.files} --repeat {repeat}`.",
        "",
        "| case | median s | min s | max s |",
        "|---|---:|---:|---:|",
        f"| warm: discovery and REV summary cached | {med(res['warm'])} | {min(res['warm']):.2f} | {max(res['warm']):.2f} |",
        f"| first run after the edit (tree rediscovered) | {med(res['first'])} | {min(res['first']):.2f} | {max(res['first']):.2f} |",
        f"| cold REV: git archive + discovery of REV | {med(res['cold'])} | {min(res['cold']):.2f} | {max(res['cold']):.2f} |",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envs", type=int, default=50)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    shape = Shape(args.envs, args.files)
    with tempfile.TemporaryDirectory(prefix="affected-bench-") as tmp:
        res = run(shape, args.repeat, Path(tmp))
    print(json.dumps(res, indent=2) if args.json else render(res, shape, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
