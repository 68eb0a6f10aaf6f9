"""The sample monorepo is a working Flyte v2 project.

Each test copies `sample_monorepo/` to a temporary directory and runs real
Python in a child process, with the copy as working directory and as
`PYTHONPATH` (how `flyte run` / `flyte deploy` see a monorepo root). Tasks run
locally through `flyte.init()` + `flyte.run(...)`, no backend needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests.support.cli import copy_sample

SAMPLE = Path(__file__).resolve().parent.parent / "sample_monorepo"

# report_pipeline(n=6): series 0.5 3 -7 6.5 9 11.5 (-7 is clipped to 0 by
# preprocessing.clean), fitted by ml_training.train, rendered with the
# visualization assets.
PIPELINE_N6 = "[trend-report] n=6 slope=2.271 intercept=-0.595 rmse=1.799 mean=3.917 |=+ #%@|"

ENV_MODULES = [
    "services.preprocessing.tasks",
    "services.ml_training.tasks",
    "services.ml_training.large",
    "services.visualization.tasks",
    "services.reporting.tasks",
    "services.inference.tasks",
]


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    root = tmp_path / "sample_monorepo"
    return copy_sample(root)


def run_python(root: Path, script: str) -> dict:
    """Run `script` in a child interpreter rooted at `root`; it prints one JSON document."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pipeline_runs_locally_across_three_environments(monorepo: Path) -> None:
    out = run_python(
        monorepo,
        """
        import json
        import flyte
        from services.visualization.tasks import report_pipeline

        flyte.init()
        results = {n: flyte.run(report_pipeline, n=n).outputs()[0] for n in (6, 8)}
        print(json.dumps(results))
        """,
    )
    assert out["6"] == PIPELINE_N6
    assert out["8"] == "[trend-report] n=8 slope=2.214 intercept=-0.500 rmse=1.564 mean=6.375 |-= *#%%@|"


def test_cloned_environment_and_inference_run(monorepo: Path) -> None:
    out = run_python(
        monorepo,
        """
        import json
        import flyte
        from services.inference.tasks import describe_model, predict
        from services.ml_training.large import train_large
        from services.ml_training.tasks import train
        from services.preprocessing.tasks import synthetic_series

        flyte.init()
        values = synthetic_series(8)
        print(json.dumps({
            "large": flyte.run(train_large, values=values).outputs()[0],
            "standard": flyte.run(train, values=values).outputs()[0],
            "predict": flyte.run(predict, xs=[0.0, 1.5, 3.0]).outputs()[0],
            "model": flyte.run(describe_model).outputs()[0],
        }))
        """,
    )
    assert out["large"] == out["standard"] == {"slope": 2.214286, "intercept": -0.5, "rmse": 1.564106, "n": 8.0}
    assert out["predict"] == [1.0, 4.0, 7.0]
    assert out["model"] == "intercept=1.000 slope=2.000"


REPORTING_SCRIPT = """
    import json
    import flyte
    from services.reporting.tasks import report_title, summarize

    flyte.init()
    print(json.dumps({
        "title": flyte.run(report_title).outputs()[0],
        "summary": flyte.run(summarize, values=[1.0, 2.0, 4.0, 8.0]).outputs()[0],
    }))
    """


def test_reporting_reads_its_config_file_at_run_time(monorepo: Path) -> None:
    out = run_python(monorepo, REPORTING_SCRIPT)
    assert out["title"] == "Weekly Sensor Report"
    assert out["summary"] == "Weekly Sensor Report (data-platform): count=4 mean=3.75 stdev=2.68 max=8.00"

    # The value comes from the data file, not from code: edit the file, rerun.
    config_path = monorepo / "services" / "reporting" / "config" / "report.json"
    config = json.loads(config_path.read_text())
    config.update(title="Monthly Sensor Report", precision=1, fields=["min", "mean"])
    config_path.write_text(json.dumps(config))
    out = run_python(monorepo, REPORTING_SCRIPT)
    assert out["title"] == "Monthly Sensor Report"
    assert out["summary"] == "Monthly Sensor Report (data-platform): min=1.0 mean=3.8"


def test_discovery_finds_six_uniquely_named_environments(monorepo: Path) -> None:
    out = run_python(
        monorepo,
        f"""
        import importlib, json, sys
        from flyte._environment import list_loaded_environments

        for name in {ENV_MODULES!r}:
            importlib.import_module(name)

        def kind(image):
            if image.dockerfile is not None:
                return "dockerfile"
            if image._ref_name is not None:
                return "ref_name"
            return "debian_base"

        envs = {{}}
        for e in list_loaded_environments():
            assert e.name not in envs, e.name
            # Where the env is defined: the module of its tasks (flyte 2.12's
            # _declaring_file points into dataclasses.py for clone_with clones).
            modules = {{t.func.__module__ for t in e.tasks.values()}}
            assert len(modules) == 1, (e.name, modules)
            module = sys.modules[modules.pop()]
            envs[e.name] = {{
                "file": module.__file__,
                "variable": [k for k, v in vars(module).items() if v is e],
                "depends_on": [d.name for d in e.depends_on],
                "tasks": sorted(e.tasks),
                "image": kind(e.image),
                "env_vars": e.env_vars or {{}},
                "resources": [e.resources.cpu, e.resources.memory] if e.resources else None,
            }}
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("libs", "services"))
        print(json.dumps({{"envs": envs, "loaded": loaded}}))
        """,
    )
    envs = out["envs"]
    rel = {name: Path(e["file"]).resolve().relative_to(monorepo.resolve()).as_posix() for name, e in envs.items()}
    assert rel == {
        "preprocessing": "services/preprocessing/tasks.py",
        "ml_training": "services/ml_training/tasks.py",
        "ml_training_large": "services/ml_training/large.py",
        "visualization": "services/visualization/tasks.py",
        "reporting": "services/reporting/tasks.py",
        "inference": "services/inference/tasks.py",
    }
    assert {n: e["variable"] for n, e in envs.items()} == {
        "preprocessing": ["preprocessing_env"],
        "ml_training": ["ml_training_env"],
        "ml_training_large": ["ml_training_large_env"],
        "visualization": ["visualization_env"],
        "reporting": ["reporting_env"],
        "inference": ["inference_env"],
    }
    assert {n: e["depends_on"] for n, e in envs.items()} == {
        "preprocessing": [],
        "ml_training": ["preprocessing"],
        # clone_with copies depends_on (not the tasks) of the environment it clones.
        "ml_training_large": ["preprocessing"],
        "visualization": ["ml_training"],
        "reporting": [],
        "inference": [],
    }
    assert {n: e["image"] for n, e in envs.items()} == {
        "preprocessing": "debian_base",
        "ml_training": "debian_base",
        "ml_training_large": "debian_base",
        "visualization": "debian_base",
        "reporting": "dockerfile",
        "inference": "ref_name",
    }
    assert envs["ml_training_large"]["tasks"] == ["ml_training_large.train_large"]
    assert envs["ml_training_large"]["resources"] == ["4", "8Gi"]
    assert envs["ml_training"]["tasks"] == ["ml_training.train"]
    assert envs["visualization"]["tasks"] == ["visualization.report_pipeline"]
    assert envs["inference"]["resources"] == ["1", "1Gi"]
    assert envs["inference"]["env_vars"]["MODEL_NAME"] == "linear-v1"

    # The lazy import inside report_pipeline is not visible in sys.modules after
    # discovery (what a loaded_modules bundle would miss), nor is the unused lib.
    assert "services.visualization.render" not in out["loaded"]
    assert "libs.common.unused" not in out["loaded"]
    assert {"libs.common.stats", "libs.common.text", "libs.mlkit.model", "libs.mlkit.serving"} <= set(out["loaded"])


def test_build_configuration_and_ignore_fixtures() -> None:
    pyproject = tomllib.loads((SAMPLE / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "sample-monorepo"
    flyte_table = pyproject["tool"]["hatch"]["build"]["targets"]["flyte"]
    assert flyte_table == {
        "copy-style": "loaded_modules",
        "images": {"base": "127.0.0.1:5000/flyte-build/runtime:py3.11"},
        "registry": "127.0.0.1:5000/flyte-build",
        "docker": {"base-images": {"debian": "flyte-build-test/python:3.11"}, "debian-recipe": "light", "network": "host"},
        "envs": {"reporting": {"copy-style": "all"}},
    }
    gitignore = (SAMPLE / ".gitignore").read_text().split()
    assert {"*.pyc", "__pycache__/", "dist/", "scratch/"} <= set(gitignore)
    assert {"*.ipynb", "notebooks/"} <= set((SAMPLE / ".flyteignore").read_text().split())
    assert (SAMPLE / "notebooks" / "explore.ipynb").is_file()

    reporting = SAMPLE / "services" / "reporting"
    assert "*.log" in (reporting / ".dockerignore").read_text().split()
    assert (reporting / "debug.log").is_file()
    dockerfile = (reporting / "Dockerfile").read_text()
    assert "FROM 127.0.0.1:5000/flyte-build/runtime:py3.11" in dockerfile  # the flyte runtime image
    assert "COPY requirements.txt" in dockerfile
    assert (reporting / "requirements.txt").is_file()
    assets = SAMPLE / "services" / "visualization" / "assets"
    assert sorted(p.name for p in assets.iterdir()) == ["palette.txt", "template.txt"]
