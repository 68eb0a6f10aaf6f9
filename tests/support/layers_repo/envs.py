"""One TaskEnvironment per image layer kind flyte-build renders beyond the basics.

tests/test_image_layers.py builds each image for real and checks inside a
container what the layer promises. Paths are absolute (from this file), as a
user's module would write them.
"""

from pathlib import Path

import flyte
from flyte._image import PythonWheels

HERE = Path(__file__).parent
BASE = "flyte-build-test/python:3.11"


def base(name: str) -> flyte.Image:
    return flyte.Image.from_base(BASE).clone(name=name, extendable=True)


poetry = flyte.TaskEnvironment(
    "layers_poetry",
    # poetry's HTTP client trusts certifi's roots, not the system bundle that holds the
    # CA of the proxy these test machines reach PyPI through
    image=base("layers-poetry")
    .with_env_vars({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"})
    .with_poetry_project(HERE / "poetry_proj/pyproject.toml", project_install_mode="install_project"),
)
poetry_deps = flyte.TaskEnvironment(
    "layers_poetry_deps",
    image=base("layers-poetry-deps")
    .with_env_vars({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"})
    .with_poetry_project(HERE / "poetry_proj/pyproject.toml"),  # the default: dependencies only
)
uv_script = flyte.TaskEnvironment(
    "layers_uv_script",
    image=flyte.Image.from_uv_script(HERE / "scripts/job.py", name="layers-uv-script"),
)
dockerignore = flyte.TaskEnvironment(
    "layers_dockerignore",
    image=base("layers-dockerignore").with_dockerignore(HERE / "ci/.dockerignore").with_source_folder(HERE / "assets", "/app/assets"),
)
# A secret's value is in no cache key (flyte's neither): the test writes a per-session word
# over @SESSION@, so BuildKit's layer cache cannot replay this step from an earlier secret.
secret = flyte.TaskEnvironment(
    "layers_secret",
    image=base("layers-secret").with_commands(
        [': @SESSION@ && test -n "$FB_LAYERS_TOKEN" && printf %s "$FB_LAYERS_TOKEN" | sha256sum | cut -d" " -f1 > /secret-proof'],
        secret_mounts=[flyte.Secret(key="fb-layers-token", as_env_var="FB_LAYERS_TOKEN")],
    ),
)
# what with_local_v2() adds, for a wheel folder of the project's own (flyte's dist/ is not here)
wheels = flyte.TaskEnvironment(
    "layers_wheels",
    image=base("layers-wheels").clone(addl_layer=PythonWheels(wheel_dir=HERE / "dist", package_name="fbwheel")),
)


@poetry.task
async def poetry_task() -> str:
    return "poetry"
