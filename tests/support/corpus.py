"""Small Flyte projects shaped like real ones, for the differential tests.

Each `Case` is a tree of files (written fresh by `materialize`), where flyte
and flyte-build are pointed (`root`, `path`), with which flags, and which
tasks the bundle test calls (all their inputs have defaults). They are our
own projects, written for the layouts the flyte-sdk examples show: src
layouts, uv workspaces, tasks split across packages, package-init side
effects, plugins imported by computed name, a root that is a package,
`with_code_bundle`, Dockerfile images, pure BYOI, a published library,
cross-env calls, defaults/docs/triggers, copy styles none and all.
"""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    name: str
    files: dict[str, str]
    root: str = "."  # flyte-build's root, relative to the project
    flyte_root: str | None = None  # flyte's --root-dir when it differs (a src layout run with root = project)
    path: str = "."  # what `flyte deploy --recursive` is given, relative to the project
    copy_style: str = "loaded_modules"
    images: dict = field(default_factory=dict)
    pythonpath: tuple[str, ...] = ()  # project-relative entries (editable installs, installed libraries)
    image_paths: tuple[str, ...] = ()  # what the image has installed, for the bundle runs
    run: tuple[str, ...] = ()  # tasks the bundle test calls
    git: bool = False  # `git init` the project (and commit) before running
    expect: dict = field(default_factory=dict)  # results the test asserts beyond equality
    # cases with one group share one project (their files side by side, one
    # root): one flyte run and one flyte-build run check them all, and each
    # case's test looks at its own envs (`envs`)
    group: str | None = None
    envs: tuple[str, ...] = ()


def _d(s: str) -> str:
    return textwrap.dedent(s).lstrip("\n")


PYPROJECT = _d('''
    [project]
    name = "{name}"
    version = "0.1.0"
    requires-python = ">=3.10"
''')

SRC_LAYOUT = {
    "pyproject.toml": PYPROJECT.format(name="shop") + "\n[tool.setuptools.packages.find]\nwhere = [\"src\"]\n",
    "uv.lock": "version = 1\n",
    "src/shop/__init__.py": "",
    "src/shop/envs.py": _d('''
        import pathlib

        import flyte

        env = flyte.TaskEnvironment(
            name="shop",
            image=flyte.Image.from_debian_base().with_uv_project(
                pyproject_file=pathlib.Path(__file__).parent.parent.parent / "pyproject.toml",
            ),
        )
    '''),
    "src/shop/tasks/__init__.py": "",
    "src/shop/tasks/price.py": _d('''
        from shop.envs import env


        @env.task
        def price(x: int = 2) -> int:
            return x * 10
    '''),
    "src/shop/flows/__init__.py": "",
    "src/shop/flows/order.py": _d('''
        from shop.envs import env
        from shop.tasks.price import price


        @env.task
        def order(n: int = 3) -> int:
            return sum(price(i) for i in range(n))
    '''),
}

CASES: list[Case] = [
    Case("src_layout_root_src", SRC_LAYOUT, root="src", path="src", run=("shop.order", "shop.price")),
    Case("src_layout_root_project", SRC_LAYOUT, root=".", flyte_root="src", path="src", run=("shop.order",),
         expect={"sys_path": "./.:./src"}),
    Case(
        "uv_workspace",
        {
            "pyproject.toml": PYPROJECT.format(name="birds") + "\n[tool.uv.workspace]\nmembers = [\"packages/*\"]\n",
            "app/__init__.py": "",
            "app/main.py": _d('''
                import flyte
                from feeder.actions import feed
                from seeds.actions import sow

                env = flyte.TaskEnvironment(name="birds")


                @env.task
                def fly(n: int = 2) -> str:
                    return feed(n) + sow(n)
            '''),
            "packages/feeder/pyproject.toml": PYPROJECT.format(name="feeder"),
            "packages/feeder/src/feeder/__init__.py": "",
            "packages/feeder/src/feeder/actions.py": "def feed(n):\n    return 'f' * n\n",
            "packages/seeds/pyproject.toml": PYPROJECT.format(name="seeds"),
            "packages/seeds/src/seeds/__init__.py": "",
            "packages/seeds/src/seeds/actions.py": "from seeds.utils import twice\n\n\ndef sow(n):\n    return twice('s') * n\n",
            "packages/seeds/src/seeds/utils.py": "def twice(s):\n    return s + s\n",
        },
        path="app", pythonpath=("packages/feeder/src", "packages/seeds/src"), run=("birds.fly",),
    ),
    Case(
        "split_tasks",
        {
            "pipeline/__init__.py": "",
            "pipeline/envs.py": "import flyte\n\nenv = flyte.TaskEnvironment(name='pipeline', image='ghcr.io/example/pipeline:1')\n",
            "pipeline/etl/__init__.py": "",
            "pipeline/etl/extract.py": _d('''
                from pipeline.common.util import double
                from pipeline.envs import env


                @env.task
                def extract(x: int = 4) -> int:
                    return double(x)
            '''),
            "pipeline/ml/__init__.py": "",
            "pipeline/ml/train.py": _d('''
                from pipeline.envs import env
                from pipeline.etl.extract import extract


                @env.task
                async def train(x: int = 1) -> int:
                    return extract(x) + 1
            '''),
            "pipeline/common/__init__.py": "",
            "pipeline/common/util.py": "def double(x):\n    return 2 * x\n",
        },
        run=("pipeline.extract", "pipeline.train"),
        group='mixed', envs=('pipeline',),
    ),
    Case(
        "init_side_effects",
        {
            "svc/__init__.py": "import os\n\nos.environ['SVC_MODE'] = 'from-init'\nREGISTRY = ['init']\n",
            "svc/jobs/__init__.py": "from svc import REGISTRY\n\nREGISTRY.append('jobs-init')\n",
            "svc/jobs/work.py": _d('''
                import os

                import flyte

                from svc import REGISTRY

                env = flyte.TaskEnvironment(name="svc")


                @env.task
                def work() -> str:
                    return os.environ["SVC_MODE"] + ":" + ",".join(REGISTRY)
            '''),
        },
        run=("svc.work",), expect={"svc.work": "ran: 'from-init:init,jobs-init'"},
        group='mixed', envs=('svc',),
    ),
    Case(
        "plugins_by_name",
        {
            "plug/__init__.py": "",
            "plug/plugins/__init__.py": _d('''
                import importlib

                LOADED = [importlib.import_module(f"plug.plugins.{n}").NAME for n in ("alpha", "beta")]
            '''),
            "plug/plugins/alpha.py": "NAME = 'alpha'\n",
            "plug/plugins/beta.py": "NAME = 'beta'\n",
            "plug/plugins/unused.py": "NAME = 'unused'\n",
            "plug/flow.py": _d('''
                import flyte

                from plug.plugins import LOADED

                env = flyte.TaskEnvironment(name="plug")


                @env.task
                def names() -> str:
                    return "+".join(LOADED)
            '''),
        },
        run=("plug.names",), expect={"plug.names": "ran: 'alpha+beta'"},
        group='mixed', envs=('plug',),
    ),
    Case(
        "root_package",
        {
            "__init__.py": "",
            "msa/__init__.py": "",
            "msa/run.py": "import flyte\n\nmsa_env = flyte.TaskEnvironment(name='msa')\n\n\n@msa_env.task\ndef align(n: int = 2) -> int:\n    return n + 1\n",
            "fold/__init__.py": "",
            "fold/run.py": "import flyte\n\nfold_env = flyte.TaskEnvironment(name='fold')\n\n\n@fold_env.task\ndef fold(n: int = 2) -> int:\n    return n * 3\n",
            "run_pipeline.py": _d('''
                import flyte
                from fold.run import fold, fold_env
                from msa.run import align, msa_env

                env = flyte.TaskEnvironment(name="pipeline", depends_on=[msa_env, fold_env])


                @env.task
                def pipeline(n: int = 1) -> int:
                    return fold(align(n))
            '''),
        },
        run=("pipeline.pipeline", "msa.align", "fold.fold"),
    ),
    Case(
        "with_code_bundle",
        {
            "main.py": _d('''
                import flyte
                from dep import exponent

                env = flyte.TaskEnvironment(
                    name="full_build",
                    image=flyte.Image.from_debian_base().with_pip_packages("numpy").with_code_bundle(),
                )


                @env.task
                def square(x: int = 3) -> int:
                    return x ** exponent()
            '''),
            "dep.py": "def exponent():\n    return 2\n",
        },
        run=("full_build.square",), expect={"full_build.square": "ran: 9"},
        group='mixed', envs=('full_build',),
    ),
    Case(
        "dockerfile_env",
        {
            "Dockerfile": "FROM python:3.11-slim\nRUN pip install flyte\n",
            "dockerfile_env.py": _d('''
                from pathlib import Path

                import flyte

                env = flyte.TaskEnvironment(
                    name="docker_env",
                    image=flyte.Image.from_dockerfile(Path(__file__).parent / "Dockerfile", registry="localhost:5000", name="df"),
                )


                @env.task
                def hello(name: str = "docker") -> str:
                    return "hello " + name
            '''),
        },
        run=("docker_env.hello",),
        group='mixed', envs=('docker_env',),
    ),
    Case(
        "pure_byoi",
        {
            "workflow_code/__init__.py": "",
            "workflow_code/envs.py": _d('''
                import flyte

                training = flyte.TaskEnvironment(name="training", image=flyte.Image.from_ref_name("training"))
                prep = flyte.TaskEnvironment(name="data_prep", image=flyte.Image.from_ref_name("data-prep"))
                orchestrator = flyte.TaskEnvironment(name="orchestrator", depends_on=[training, prep])
            '''),
            "workflow_code/tasks.py": _d('''
                from workflow_code.envs import orchestrator, prep, training


                @prep.task
                def clean(n: int = 3) -> int:
                    return n


                @training.task
                def train(n: int = 3) -> float:
                    return n / 2


                @orchestrator.task
                def main(n: int = 3) -> float:
                    return train(clean(n))
            '''),
        },
        images={"training": "registry.example.com/training:v1", "data-prep": "registry.example.com/data-prep:v1",
                "default": "registry.example.com/default:v1"},
        run=("orchestrator.main",),
        expect={"images": {"training": "registry.example.com/training:v1", "data_prep": "registry.example.com/data-prep:v1",
                           "orchestrator": "registry.example.com/default:v1"}},
    ),
    Case(
        "published_library",
        {
            "lib/site-packages/tasklib/__init__.py": "",
            "lib/site-packages/tasklib/flyte_entities.py": _d('''
                import flyte

                lib_env = flyte.TaskEnvironment(name="tasklib")


                @lib_env.task
                def shout(s: str = "hi") -> str:
                    return s.upper()
            '''),
            "project/main.py": _d('''
                import flyte
                from tasklib.flyte_entities import lib_env, shout

                env = flyte.TaskEnvironment(name="my_project", depends_on=[lib_env])


                @env.task
                def main(s: str = "hey") -> str:
                    return shout(s) + "!"
            '''),
        },
        root="project", path="project", pythonpath=("lib/site-packages",), image_paths=("lib/site-packages",),
        run=("my_project.main", "tasklib.shout"),
    ),
    Case(
        "cross_env_calls",
        {
            "envs_a.py": _d('''
                import flyte
                from envs_b import b_task

                env_a = flyte.TaskEnvironment(name="env_a", image="ghcr.io/example/a:1")


                @env_a.task
                def a_task(x: int = 1) -> int:
                    return b_task(x) + 1
            '''),
            "envs_b.py": _d('''
                import flyte

                env_b = flyte.TaskEnvironment(name="env_b", image="ghcr.io/example/b:1")


                @env_b.task
                def b_task(x: int = 1) -> int:
                    return x * 100
            '''),
            "envs_c.py": _d('''
                import flyte

                env_c = flyte.TaskEnvironment(name="env_c", image="ghcr.io/example/c:1")


                @env_c.task
                def c_task() -> str:
                    return "c"
            '''),
        },
        run=("env_a.a_task",), expect={"env_a.a_task": "ran: 101"},
        group='mixed', envs=('env_a', 'env_b', 'env_c'),
    ),
    Case(
        "defaults_docs_trigger",
        {
            "report.py": _d('''
                import flyte

                env = flyte.TaskEnvironment(name="report", description="nightly reports")


                @env.task(triggers=[flyte.Trigger.hourly(), flyte.Trigger(name="nightly", automation=flyte.Cron("0 2 * * *"), inputs={"days": 7})])
                def summarize(days: int = 1, title: str = "daily", scale: float = 1.5) -> str:
                    """Summarize the last days.

                    A longer description that says what the report holds.

                    Args:
                        days: how many days to cover
                        title: the report's title

                    Returns:
                        the summary line
                    """
                    return f"{title}:{days * scale}"
            '''),
        },
        run=("report.summarize",), expect={"report.summarize": "ran: 'daily:1.5'"},
        group='mixed', envs=('report',),
    ),
    Case(
        # a task that is not a Python function: flyte's ContainerTask in an env made by
        # TaskEnvironment.from_task, a Python env depending on it, and a task calling it
        "container_task",
        {
            "containers.py": _d('''
                import flyte
                from flyte.extras import ContainerTask

                greet = ContainerTask(
                    name="greet",
                    image="ghcr.io/example/shell:1",
                    inputs={"name": str},
                    outputs={"greeting": str},
                    command=["/bin/sh", "-c", "printf 'hello %s' {{.inputs.name}} > /var/outputs/greeting"],
                )

                container_env = flyte.TaskEnvironment.from_task("container_env", greet)
            '''),
            "container_caller.py": _d('''
                import flyte
                from containers import container_env, greet

                env = flyte.TaskEnvironment(name="container_caller", depends_on=[container_env])


                @env.task
                async def hello(name: str = "world") -> str:
                    return await greet(name=name)
            '''),
        },
        group='mixed', envs=('container_env', 'container_caller'),
    ),
    Case(
        # a connector-style task: a TaskTemplate of its own task type with no Python
        # function, run by a backend connector from its custom config and SQL (flyte's
        # AsyncConnectorExecutorMixin only runs it locally, and needs the connectors extra)
        "connector_task",
        {
            "warehouse.py": _d('''
                import inspect

                import flyte
                from flyte.extend import TaskTemplate
                from flyte.models import NativeInterface
                from flyteidl2.core import tasks_pb2


                class WarehouseQuery(TaskTemplate):  # a connector's task (its local-run mixin needs the connectors extra)
                    def __init__(self, name: str, statement: str, table: str, inputs: dict, **kwargs):
                        super().__init__(name=name, task_type="warehouse_query",
                                         interface=NativeInterface({k: (v, inspect.Parameter.empty) for k, v in inputs.items()}, {}),
                                         **kwargs)
                        self.statement, self.table = statement, table

                    def custom_config(self, sctx):
                        return {"table": self.table, "domain": sctx.domain}

                    def sql(self, sctx):
                        return tasks_pb2.Sql(statement=self.statement, dialect=tasks_pb2.Sql.Dialect.ANSI)


                count_rows = WarehouseQuery(name="count_rows", statement="SELECT COUNT(*) FROM events WHERE day = @day",
                                            table="events", inputs={"day": str})
                warehouse_env = flyte.TaskEnvironment.from_task("warehouse", count_rows)
            '''),
        },
        group='mixed', envs=('warehouse',),
    ),
    Case(
        # an app whose parameter is another app's endpoint: serialized offline, as flyte
        # does (an input carrying the other app's name), and deployed after it (depends_on)
        "app_endpoint",
        {
            "apps.py": _d('''
                import flyte
                import flyte.app

                backend = flyte.app.AppEnvironment(name="backend-app", image="ghcr.io/example/app:1", port=8080,
                                                   args=["python", "-m", "http.server", "8080"])
                frontend = flyte.app.AppEnvironment(
                    name="frontend-app", image="ghcr.io/example/app:1", port=8081,
                    args=["python", "-m", "http.server", "8081"], depends_on=[backend],
                    parameters=[flyte.app.Parameter(name="backend_url", env_var="BACKEND_URL",
                                                    value=flyte.app.AppEndpoint(app_name="backend-app"))],
                )
            '''),
        },
        group='mixed', envs=('backend-app', 'frontend-app'),
    ),
    Case(
        "none_with_includes",
        {
            "service.py": _d('''
                import flyte

                env = flyte.TaskEnvironment(name="service", image="ghcr.io/example/service:2",
                                            include=("config/settings.yaml", "data/*.csv"))


                @env.task
                def serve() -> str:
                    return "ok"
            '''),
            "config/settings.yaml": "mode: prod\n",
            "config/other.yaml": "left: out\n",
            "data/a.csv": "x\n1\n",
            "data/b.csv": "x\n2\n",
            "data/readme.txt": "not matched\n",
        },
        copy_style="none",
    ),
    Case(
        "copy_all_ignores",
        {
            ".gitignore": "*.tmp\nscratch/\n",
            "proj/app.py": "import flyte\n\nenv = flyte.TaskEnvironment(name='allfiles')\n\n\n@env.task\ndef read() -> str:\n    import pathlib\n    return pathlib.Path('data/in.csv').read_text().strip()\n",
            "proj/data/in.csv": "payload",
            "proj/build/gen.py": "x = 1\n",
            "proj/dist/pkg.whl": "wheel",
            "proj/proj.egg-info/PKG-INFO": "info",
            "proj/run.log": "log",
            "proj/venv/bin/python": "venv",
            "proj/env/conf": "env dir",
            "proj/.cache/x": "cache",
            "proj/nested/build/keep.py": "kept = True\n",
            "proj/nested/debug.log": "log",
            "proj/notes.tmp": "ignored by the enclosing repository's .gitignore",
            "proj/scratch/a.txt": "ignored dir",
            "proj/tracked.tmp": "tracked, so git does not ignore it",
            "proj/keep.txt": "kept",
        },
        root="proj", path="proj", copy_style="all", git=True, run=("allfiles.read",),
        expect={"allfiles.read": "ran: 'payload'"},
    ),
]


def groups() -> dict[str, list[Case]]:
    """The cases by project: a group's cases share one, the others have their own."""
    out: dict[str, list[Case]] = {}
    for c in CASES:
        out.setdefault(c.group or c.name, []).append(c)
    return out


def materialize(case: Case, base: Path, name: str | None = None, files: dict | None = None) -> Path:
    """Write the case's files (or `files`) under base/<name>; returns the project directory."""
    proj = base / (name or case.name)
    for rel, text in (files if files is not None else case.files).items():
        p = proj / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if case.git:
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin", "HOME": str(base)}
        for args in (["init", "-q"], ["add", "-A"], ["add", "-f", "proj/tracked.tmp"], ["commit", "-qm", "init"]):
            subprocess.run(["git", *args], cwd=proj, env=env, check=True, capture_output=True)
        # untracked after the commit: the enclosing repository's .gitignore decides
        (proj / "proj/late.tmp").write_text("untracked, ignored")
        (proj / "proj/late.txt").write_text("untracked, kept")
    return proj


def materialize_group(cases: list[Case], base: Path, name: str) -> Path:
    files: dict[str, str] = {}
    for c in cases:
        for rel, text in c.files.items():
            assert files.setdefault(rel, text) == text, f"{name}: two cases write {rel}"
    return materialize(cases[0], base, name, files)
