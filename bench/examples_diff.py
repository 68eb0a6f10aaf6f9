"""The differential check of tests/test_fidelity.py over flyte-sdk's `examples/`.

    python -m bench.examples_diff [--examples DIR | --repo GIT_DIR] [PROJECT ...]

Takes a checkout of flyte-sdk's `examples/` folder (`--examples`), or a git
directory of the flyte-sdk repository (`--repo`, default: the mirror at
/work/.mirror/flyteorg+flyte-sdk/repo) whose `examples/` it extracts into a
temporary directory. Nothing of it is vendored here.

Each example project (default: project_structures deploy_patterns
uv_monorepo_guide multi_env byoi_guide published-library) holds one or more
units, deployed as their READMEs say: a folder with a pyproject.toml (a src
layout is deployed by flyte with `--root-dir src`, by flyte-build from the
project folder), or a top-level folder of modules declaring environments.
Other `src` folders of the example are what a uv venv would have on
`sys.path` (workspace members under the unit, installed libraries outside
it: those are copied into a `site-packages` folder, as an install would),
and every `Image.from_ref_name("X")` is mapped with `--image X=...`.

For each unit it prints the envs and tasks flyte-build found against
flyte's, how many tasks loaded from their env's own bundle in a clean
interpreter, and each difference.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support import flyte_reference as fr  # noqa: E402

DEFAULT_PROJECTS = ["project_structures", "deploy_patterns", "uv_monorepo_guide", "multi_env", "byoi_guide", "published-library"]
MIRROR = "/work/.mirror/flyteorg+flyte-sdk/repo"
SKIP_DIRS = {".venv", "venv", "__pycache__", ".git", "node_modules"}


def _py_files(d: Path):
    for p in sorted(d.rglob("*.py")):
        if not SKIP_DIRS & set(p.relative_to(d).parts):
            yield p


def _declares_envs(d: Path) -> bool:
    return any("TaskEnvironment" in p.read_text(errors="replace") for p in _py_files(d))


def _src_layout(d: Path) -> bool:
    src = d / "src"
    return (d / "pyproject.toml").is_file() and src.is_dir() and not (src / "__init__.py").exists() and any(
        (x / "__init__.py").is_file() for x in src.iterdir() if x.is_dir())


def _project_name(d: Path) -> str | None:
    m = re.search(r'^name\s*=\s*"([^"]+)"', (d / "pyproject.toml").read_text(errors="replace"), re.M) \
        if (d / "pyproject.toml").is_file() else None
    return m.group(1) if m else None


def _variants(name: str) -> set[str]:
    return {name, name.replace("-", "_"), name.replace("_", "-")}


def units(example: Path) -> list[Path]:
    """The folders deployed on their own: each pyproject.toml folder declaring
    envs (not one nested in another such folder), else each top-level folder
    (or the example itself) of modules declaring envs."""
    found: list[Path] = []
    for pp in sorted(example.rglob("pyproject.toml"), key=lambda p: (len(p.parts), p)):  # outermost first
        d = pp.parent
        if SKIP_DIRS & set(d.relative_to(example).parts):
            continue
        if any(d.is_relative_to(u) for u in found):
            continue
        if _declares_envs(d):
            found.append(d)
    covered = lambda p: any(p.is_relative_to(u) for u in found)  # noqa: E731
    if any(not covered(p) for p in example.glob("*.py")) and any("TaskEnvironment" in p.read_text(errors="replace")
                                                                  for p in example.glob("*.py")):
        found.append(example)
    for d in sorted(x for x in example.iterdir() if x.is_dir() and x.name not in SKIP_DIRS):
        if covered(d) or d in found:
            continue
        if _declares_envs(d):
            found.append(d)
    return found


def check_unit(example: Path, unit: Path, scratch: Path):
    flyte_root = unit / "src" if _src_layout(unit) else unit
    others = [s for s in example.rglob("src") if s.is_dir() and s != unit / "src" and not SKIP_DIRS & set(s.parts)
              and not (s / "__init__.py").exists()]
    inside = [s.relative_to(unit) for s in others if s.is_relative_to(unit)]
    # a project elsewhere in the example is installed only when the unit's
    # pyproject.toml names it (a dependency: the published library)
    wanted = (unit / "pyproject.toml").read_text(errors="replace") if (unit / "pyproject.toml").is_file() else ""
    outside = [s for s in others if not s.is_relative_to(unit) and _project_name(s.parent) and
               any(v in wanted for v in _variants(_project_name(s.parent)))]
    site = scratch / "site-packages"
    for s in outside:  # installed libraries: what `uv sync` would put in site-packages
        for pkg in s.iterdir():
            if pkg.is_dir():
                shutil.copytree(pkg, site / pkg.name, dirs_exist_ok=True)
    pythonpath = [str(p) for p in inside] + ([str(site)] if outside else [])
    refs = set()
    for p in _py_files(unit):
        refs.update(re.findall(r"from_ref_name\(\s*['\"]([^'\"]+)['\"]", p.read_text(errors="replace")))
    images = {r: f"registry.example.com/{r}:v1" for r in sorted(refs)}
    rel = str(flyte_root.relative_to(unit))  # as the README deploys it (a src layout: --root-dir src)
    return fr.differential(unit, rel, rel, None,
                           images=images, pythonpath=pythonpath, image_paths=[str(site)] if outside else (),
                           cache_dir=scratch / "cache")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", help="a checkout of flyte-sdk's examples/ folder")
    ap.add_argument("--repo", default=MIRROR, help="a git directory of flyte-sdk (examples/ is extracted from HEAD)")
    ap.add_argument("projects", nargs="*", default=DEFAULT_PROJECTS)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="examples-diff-") as tmp:
        if args.examples:
            examples = Path(tmp) / "examples"
            shutil.copytree(args.examples, examples)
        else:
            archive = subprocess.run(["git", "-C", args.repo, "archive", "HEAD", "examples"], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            examples = Path(tmp) / "examples"
        failures = 0
        for name in args.projects:
            example = examples / name
            print(f"\n## {name}\n")
            print("| unit | envs (ours/flyte) | tasks (ours/flyte) | bundle loads | differences |")
            print("|---|---|---|---|---|")
            notes = []
            for i, unit in enumerate(units(example)):
                label = str(unit.relative_to(example)) or "."
                try:
                    o = check_unit(example, unit, Path(tmp) / f"scratch-{name}-{i}")
                except Exception as exc:  # noqa: BLE001 - one unit's failure is a row
                    print(f"| {label} | - | - | - | error: {str(exc).splitlines()[0][:120]} |")
                    failures += 1
                    continue
                row = o.table_row()
                if o.ref.get("error") or o.ref.get("failed"):
                    why = o.ref.get("error") or "; ".join(f"{Path(p).name}: {e[:100]}" for p, e in o.ref["failed"])
                    notes.append(f"- {label}: flyte itself cannot load it: {why}")
                if o.ours.error:
                    notes.append(f"- {label}: flyte-build: {o.ours.error.splitlines()[0][:200]}")
                for d in o.diffs:
                    notes.append(f"- {label}: {d[:200]}")
                for t, r in sorted(o.runs.items()):
                    if r.startswith("FAILED"):
                        notes.append(f"- {label}: {t} does not load from its bundle: {r[:200]}")
                print(f"| {label} | {row['envs']} | {row['tasks']} | {row['loads']} | {row['diffs']} |")
                failures += bool(o.diffs or o.ours.error)
            if notes:
                print()
                print("\n".join(notes))
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
