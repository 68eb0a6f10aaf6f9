"""A synthetic Flyte v2 monorepo of a chosen size, deterministic for a seed.

Layout (what real monorepos look like, scaled):

    pyproject.toml                  copy-style loaded_modules
    libs/lib_NNN/m_NNN.py           shared libraries; modules import within their lib
    services/svc_NNN/tasks.py       one TaskEnvironment per service; depends_on the
                                    previous service in chains of CHAIN envs
    services/svc_NNN/mod_NNN.py     the service's modules, each importing lib modules
    services/svc_NNN/data/*.json    data files (never in a loaded_modules bundle)

About LIB_SHARE of the files are library modules, DATA_SHARE data files and the
rest service code. File sizes vary from about 0.5 to 6 KiB so archives do real
work. Usage: python -m bench.generate --envs 50 --files 5000 DIR
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

LIB_SHARE = 0.2
DATA_SHARE = 0.2
CHAIN = 5  # envs per depends_on chain: an edit to a chain head rebuilds at most CHAIN bundles

PYPROJECT = """\
[project]
name = "synthetic-monorepo"
version = "0.1.0"
dependencies = ["flyte>=2.12.1,<2.13"]

[tool.hatch.build.targets.flyte]
copy-style = "loaded_modules"
"""


@dataclass(frozen=True)
class Shape:
    envs: int
    files: int
    seed: int = 7

    @property
    def libs(self) -> int:
        return max(2, self.envs // 5)

    @property
    def lib_modules(self) -> int:
        return max(2, round(self.files * LIB_SHARE / self.libs) - 1)  # less __init__.py

    @property
    def data_files(self) -> int:
        return max(1, round(self.files * DATA_SHARE / self.envs))

    @property
    def service_modules(self) -> int:
        # what is left per env, less tasks.py and __init__.py
        left = self.files - self.libs * (self.lib_modules + 1) - self.envs * self.data_files - 3
        return max(1, left // self.envs - 2)


def _padding(rng: random.Random, name: str) -> str:
    """Plain functions making the file 0.5-6 KiB: real parse and compress work."""
    out = []
    for i in range(rng.randint(1, 12)):
        a, b = rng.randint(1, 97), rng.randint(1, 89)
        out.append(
            f"\n\ndef {name}_helper_{i}(values: list[float]) -> float:\n"
            f'    """Weighted sum number {i} of {name} (synthetic)."""\n'
            f"    total = 0.0\n"
            f"    for k, v in enumerate(values):\n"
            f"        total += (k % {a} + {b}) * v / {a + b}\n"
            f"    return round(total, 6)\n"
        )
    return "".join(out)


def generate(dest: Path, shape: Shape) -> dict:
    """Write the tree under `dest` (which must not exist or be empty); returns a summary."""
    rng = random.Random(shape.seed)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0

    def write(rel: str, text: str) -> None:
        nonlocal count
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        count += 1

    write("pyproject.toml", PYPROJECT)
    write(".gitignore", "*.tmp\n__pycache__/\n")
    write("libs/__init__.py", "")
    lib_mods = []
    for li in range(shape.libs):
        lib = f"lib_{li:03d}"
        write(f"libs/{lib}/__init__.py", "")
        for mi in range(shape.lib_modules):
            mod = f"m_{mi:03d}"
            imports = ""
            if mi > 0 and rng.random() < 0.5:
                imports = f"from libs.{lib} import m_{rng.randrange(mi):03d} as _dep  # noqa: F401\n"
            write(f"libs/{lib}/{mod}.py", f'"""Shared library {lib}, module {mod}."""\n\nfrom __future__ import annotations\n{imports}\n\ndef value(x: float) -> float:\n    return x * {mi + 1} + {li}\n' + _padding(rng, mod))
            lib_mods.append((lib, mod))
    write("services/__init__.py", "")
    for ei in range(shape.envs):
        svc = f"svc_{ei:03d}"
        write(f"services/{svc}/__init__.py", "")
        mods = []
        for mi in range(shape.service_modules):
            mod = f"mod_{mi:03d}"
            picks = sorted({lib_mods[rng.randrange(len(lib_mods))] for _ in range(rng.randint(1, 2))})
            imports = "".join(f"from libs.{lib} import {m} as _{lib}_{m}\n" for lib, m in picks)
            uses = " + ".join(f"_{lib}_{m}.value(x)" for lib, m in picks)
            write(f"services/{svc}/{mod}.py", f'"""Service {svc}, module {mod}."""\n\nfrom __future__ import annotations\n\n{imports}\n\ndef step(x: float) -> float:\n    return {uses}\n' + _padding(rng, mod))
            mods.append(mod)
        upstream = ei - 1 if ei % CHAIN else None
        dep_import = f"from services.svc_{upstream:03d}.tasks import env as upstream_env\n" if upstream is not None else ""
        depends = ", depends_on=[upstream_env]" if upstream is not None else ""
        body = " + ".join(f"{m}.step(x)" for m in mods[:8]) or "x"
        write(
            f"services/{svc}/tasks.py",
            f'"""Service {svc}: its TaskEnvironment and tasks."""\n\nfrom __future__ import annotations\n\nimport flyte\n\n'
            f"from services.{svc} import {', '.join(mods)}\n{dep_import}\n"
            f'env = flyte.TaskEnvironment(\n    name="{svc}",\n'
            f"    image=flyte.Image.from_debian_base(python_version=(3, 11), install_flyte=False).with_pip_packages(\"six==1.17.0\"){depends},\n)\n\n\n"
            f"@env.task\nasync def run(x: float) -> float:\n    return {body}\n",
        )
        for di in range(shape.data_files):
            rows = [{"id": i, "value": rng.random()} for i in range(rng.randint(5, 120))]
            write(f"services/{svc}/data/sample_{di:03d}.json", json.dumps(rows, indent=1) + "\n")
    return {"envs": shape.envs, "files": count, "libs": shape.libs, "lib_modules": shape.lib_modules,
            "service_modules": shape.service_modules, "data_files_per_env": shape.data_files}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=10)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("dest", type=Path)
    a = ap.parse_args(argv)
    print(json.dumps(generate(a.dest, Shape(a.envs, a.files, a.seed))))


if __name__ == "__main__":
    main()
