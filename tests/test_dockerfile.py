"""Dockerfile rendering and content tags: pure, no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from flyte_build.errors import UserError
from flyte_build.engine.rulesets import builtin
from tests.support.cli import copy_tree, flyte_build, records

df = builtin("image.dockerfile")


def _targets(repo: Path, cache: Path) -> dict:
    return records("targets", "--json", cwd=repo, cache=cache)


def test_dockerignore_follows_docker_rules() -> None:
    rules = df.parse_dockerignore("*.py\nconfig/\n!keep.py\n**/*.log\n")
    assert df.dockerignored(rules, "tasks.py")
    assert not df.dockerignored(rules, "sub/tasks.py")  # `*` does not cross `/`, as in Docker
    assert df.dockerignored(rules, "config/report.json")  # a matched directory takes its contents
    assert not df.dockerignored(rules, "keep.py")  # a later `!` wins
    assert df.dockerignored(rules, "a/b/debug.log")
    assert not df.dockerignored(rules, "requirements.txt")


def test_every_documented_layer_renders(tmp_path: Path) -> None:
    (tmp_path / "req.txt").write_text("six\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.txt").write_text("a")
    (tmp_path / "one.cfg").write_text("x")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text("[project]\nname='p'\nversion='0'\n")
    (tmp_path / "proj" / "uv.lock").write_text("version = 1\n")
    spec = {
        "base_image": "python:3.11-slim-bookworm", "platform": ["linux/amd64"], "layers": [
            {"type": "PipPackages", "packages": ["six==1.17.0"], "index_url": "https://idx/simple", "extra_index_urls": ["https://x/simple"], "pre": True},
            {"type": "Requirements", "file": "req.txt", "packages": None},
            {"type": "AptPackages", "packages": ["curl"]},
            {"type": "UVProject", "pyproject": "proj/pyproject.toml", "uvlock": "proj/uv.lock", "project_install_mode": "dependencies_only"},
            {"type": "CopyConfig", "path_type": 1, "src": "pkg", "dst": "./pkg"},
            {"type": "CopyConfig", "path_type": 0, "src": "one.cfg", "dst": "/etc/app"},
            {"type": "Env", "env_vars": [["A", 'x "y"']]},
            {"type": "WorkDir", "workdir": "/work"},
            {"type": "Commands", "commands": ["echo hi"]},
        ],
    }
    opts = df.Options(base_images={"debian": "local/py:3.11"}, build_args={"V": "1"})
    r = df.render(spec, tmp_path, opts, "`e`", lambda rel: {f"{rel}/a.txt": str(tmp_path / rel / "a.txt")})
    text = r.dockerfile
    assert text.startswith("FROM local/py:3.11\nARG V\n")
    assert "--index-url 'https://idx/simple' --extra-index-url 'https://x/simple' --pre 'six==1.17.0'" in text
    assert "-r /tmp/flyte-build/src/req.txt" in text
    assert "apt-get install -y --no-install-recommends 'curl'" in text
    assert f"uv=={df.UV_VERSION}" in text and "uv export --frozen" in text
    assert "COPY src/pkg/ ./pkg/" in text and "COPY src/one.cfg /etc/app/" in text
    assert 'ENV A="x \\"y\\""' in text and "WORKDIR /work" in text and "RUN echo hi" in text
    assert dict(r.context) == {
        "src/req.txt": str(tmp_path / "req.txt"), "src/pkg/a.txt": str(tmp_path / "pkg" / "a.txt"),
        "src/one.cfg": str(tmp_path / "one.cfg"), "src/proj/pyproject.toml": str(tmp_path / "proj" / "pyproject.toml"),
        "src/proj/uv.lock": str(tmp_path / "proj" / "uv.lock"),
    }


def test_unsupported_layer_is_an_error_naming_it(tmp_path: Path) -> None:
    spec = {"base_image": "python:3.11-slim-bookworm", "layers": [{"type": "CondaEnv"}]}
    with pytest.raises(UserError, match=r"`e`: layer 0 \(CondaEnv\): unsupported image layer 'CondaEnv'"):
        df.render(spec, tmp_path, df.Options(), "`e`", lambda rel: {})


def test_pixi_is_a_clear_error(tmp_path: Path) -> None:
    for kind in ("PixiProject", "PixiScript"):
        spec = {"base_image": "python:3.11-slim-bookworm", "layers": [{"type": kind}]}
        with pytest.raises(UserError, match=rf"`e`: layer 0 \({kind}\): pixi layers are not supported"):
            df.render(spec, tmp_path, df.Options(), "`e`", lambda rel: {})


def _render(tmp_path: Path, layers: list, files=None) -> df.Rendered:
    lister = files or (lambda rel: {})
    return df.render({"base_image": "b:1", "layers": layers}, tmp_path, df.Options(), "`e`", lister)


def test_secret_mounts_render_as_buildkit_mounts_without_values(tmp_path: Path) -> None:
    r = _render(tmp_path, [
        {"type": "Commands", "commands": ["pip download private"], "secret_mounts": ["gh-token"]},
        {"type": "AptPackages", "packages": ["git"], "secret_mounts": [
            {"type": "Secret", "key": "apt", "group": "ops", "mount": "/etc/flyte/secrets", "as_env_var": None}]},
        {"type": "PipPackages", "packages": ["six"], "secret_mounts": [
            {"type": "Secret", "key": "gh-token", "group": None, "mount": None, "as_env_var": "GH_TOKEN"}]},
    ])
    lines = r.dockerfile.splitlines()
    ids = {env: (i, path) for i, env, path in r.secrets}
    assert set(ids) == {"GH-TOKEN", "OPS_APT"}  # flyte's host lookup: GROUP_KEY upper-cased, then /etc/secrets/group_key
    assert ids["OPS_APT"][1] == "/etc/secrets/ops_apt"
    cmd = next(x for x in lines if "pip download private" in x)
    # an env-var secret: mounted as a file for this step only and exported to it
    assert cmd.startswith("RUN --mount=type=secret,id=") and "GH_TOKEN=\"$(cat /run/secrets/" in cmd and "export GH_TOKEN && pip download" in cmd
    apt = next(x for x in lines if x.startswith("RUN") and "apt-get" in x)
    assert f"--mount=type=secret,id={ids['OPS_APT'][0]},target=/etc/flyte/secrets" in apt
    # a bare key is the Secret flyte makes of it (env var KEY upper-cased): one secret, one --secret flag
    assert len(r.secrets) == 2
    # with requirements-from = "pex" the pip layers run no step of their own: no secret to ask for
    pex = df.render({"base_image": "b:1", "layers": [{"type": "PipPackages", "packages": ["six"], "secret_mounts": ["gh-token"]}]},
                    tmp_path, df.Options(use_pex=True), "`e`", lambda rel: {})
    assert pex.secrets == () and "--mount=type=secret" not in pex.dockerfile
    with pytest.raises(UserError, match="not a valid environment variable"):
        _render(tmp_path, [{"type": "Commands", "commands": ["x"], "secret_mounts": [{"key": "k", "as_env_var": "bad-name"}]}])


def test_uv_script_installs_its_inline_dependencies(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text('# /// script\n# requires-python = ">=3.11"\n# dependencies = ["six==1.17.0", "toolz"]\n# ///\nprint(1)\n')
    r = _render(tmp_path, [{"type": "UVScript", "script": "job.py", "index_url": "https://idx/simple"}])
    assert "python3 -m pip install --no-cache-dir --index-url 'https://idx/simple' 'six==1.17.0' 'toolz'" in r.dockerfile
    (tmp_path / "bad.py").write_text("print(1)\n")
    with pytest.raises(UserError, match=r"layer 0 \(UVScript\): bad.py has no `# /// script` metadata block"):
        _render(tmp_path, [{"type": "UVScript", "script": "bad.py"}])


def test_poetry_project_modes(tmp_path: Path) -> None:
    (tmp_path / "pp" / "pkg").mkdir(parents=True)
    for n in ("pyproject.toml", "poetry.lock", "pkg/__init__.py", "notes.tmp"):
        (tmp_path / "pp" / n).write_text("x")
    lister = lambda rel: {f"{rel}/{n}": str(tmp_path / rel / n) for n in ("pyproject.toml", "poetry.lock", "pkg/__init__.py", "notes.tmp")}  # noqa: E731
    deps = _render(tmp_path, [{"type": "PoetryProject", "pyproject": "pp/pyproject.toml", "poetry_lock": "pp/poetry.lock",
                               "project_install_mode": "dependencies_only"}], lister)
    assert f"poetry=={df.POETRY_VERSION}" in deps.dockerfile and "poetry install --no-interaction --no-root" in deps.dockerfile
    assert {n for n, _ in deps.context} == {"src/pp/pyproject.toml", "src/pp/poetry.lock"}
    (tmp_path / ".dockerignore").write_text("*.tmp\n")  # the root's .dockerignore filters folder copies, as in flyte
    whole = _render(tmp_path, [{"type": "PoetryProject", "pyproject": "pp/pyproject.toml", "poetry_lock": "pp/poetry.lock",
                                "project_install_mode": "install_project"}], lister)
    assert "COPY src/pp/ /root/.flyte/src/pp/" in whole.dockerfile and "--no-root" not in whole.dockerfile
    assert {n for n, _ in whole.context} == {"src/pp/pyproject.toml", "src/pp/poetry.lock", "src/pp/pkg/__init__.py"}


def test_with_dockerignore_filters_copied_folders(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    names = ("keep.txt", "big.bin", "sub/x.bin")
    lister = lambda rel: {f"{rel}/{n}": str(tmp_path / rel / n) for n in names}  # noqa: E731
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / ".dockerignore").write_text("**/*.bin\n")
    r = _render(tmp_path, [{"type": "DockerIgnore", "path": "ci/.dockerignore"},
                           {"type": "CopyConfig", "path_type": 1, "src": "assets", "dst": "/app/assets"}], lister)
    assert {n for n, _ in r.context} == {"src/assets/keep.txt"}
    with pytest.raises(UserError, match=r"layer 0 \(DockerIgnore\): with_dockerignore file 'nope/.dockerignore' does not exist"):
        _render(tmp_path, [{"type": "DockerIgnore", "path": "nope/.dockerignore"}])


def test_wheels_need_a_wheel_of_the_package(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "fb_wheel-1.0-py3-none-any.whl").write_bytes(b"PK")
    r = _render(tmp_path, [{"type": "PythonWheels", "wheel_dir": "dist", "package_name": "fb-wheel"}])
    assert dict(r.context) == {"wheels/0/fb_wheel-1.0-py3-none-any.whl": str(tmp_path / "dist" / "fb_wheel-1.0-py3-none-any.whl")}
    assert "--no-deps --no-index --force-reinstall 'fb-wheel'" in r.dockerfile
    with pytest.raises(UserError, match=r"holds no wheel of 'flyte' \(with_local_v2 reads flyte's own dist/ folder"):
        _render(tmp_path, [{"type": "PythonWheels", "wheel_dir": "/nonexistent/dist", "package_name": "flyte"}])


def test_unresolved_ref_name_says_how_to_resolve(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--image base=URI"):
        df.render({"ref_name": "base", "layers": []}, tmp_path, df.Options(), "`e`", lambda rel: {})


def test_targets_json_shows_uris_without_building(repo: Path, tmp_path: Path) -> None:
    t = _targets(repo, tmp_path / "cache")
    assert t["image:inference"]["uri"] == "127.0.0.1:5000/flyte-build/runtime:py3.11"  # from_ref_name via config
    assert t["image:ml_training"]["uri"] == t["image:ml_training_large"]["uri"]  # one shared image
    assert t["image:reporting"]["uri"].startswith("127.0.0.1:5000/flyte-build/reporting:")
    assert len({t[f"image:{e}"]["uri"] for e in ("preprocessing", "ml_training", "visualization", "reporting")}) == 4
    assert not (tmp_path / "cache" / "logs").exists()  # nothing was built


def test_tag_moves_with_the_context_and_nothing_else(repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = _targets(repo, cache)
    uri = lambda t: t["image:reporting"]["uri"]  # noqa: E731
    # an excluded file changes: same tag (flyte's own tag misses the context entirely)
    (repo / "services/reporting/debug.log").write_text("other noise\n")
    assert uri(_targets(repo, cache)) == uri(before)
    # a .dockerignore edit that lets a file into the context moves it
    ignore = repo / "services/reporting/.dockerignore"
    ignore.write_text(ignore.read_text().replace("*.log\n", ""))
    moved = _targets(repo, cache)
    assert uri(moved) != uri(before)
    # a file of a with_source_folder moves only that image's tag
    (repo / "services/visualization/assets/palette.txt").write_text("_.oO0\n")
    after = _targets(repo, cache)
    assert after["image:visualization"]["uri"] != moved["image:visualization"]["uri"]
    for env in ("preprocessing", "ml_training", "reporting", "inference"):
        assert after[f"image:{env}"]["uri"] == moved[f"image:{env}"]["uri"]


def test_tag_is_stable_across_checkouts(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "checkout"
    copy_tree(repo, other)
    a, b = _targets(repo, tmp_path / "c1"), _targets(other, tmp_path / "c2")
    assert {k: v.get("uri") for k, v in a.items()} == {k: v.get("uri") for k, v in b.items()}


def test_bad_docker_key_names_the_field(repo: Path, tmp_path: Path) -> None:
    p = repo / "pyproject.toml"
    p.write_text(p.read_text().replace('network = "host"', 'network = "host"\nbuildr = "classic"'))
    out = flyte_build("build", "image:preprocessing", cwd=repo, cache=tmp_path / "cache")
    assert out.rc == 2
    assert "tool.hatch.build.targets.flyte.docker.buildr" in out.err


FLYTE_RUNTIME = "ghcr.io/flyteorg/flyte:py3.11-v2.12.1"  # what from_debian_base() starts from (install_flyte default)


def _render_on_debian(spec: dict, tmp_path: Path, **opts) -> df.Rendered:
    return df.render(spec, tmp_path, df.Options(base_images={"debian": "local/py:3.11"}, **opts), "`e`", lambda rel: {})


def test_from_debian_base_without_layers_is_built_with_the_flyte_runtime(tmp_path: Path) -> None:
    r = _render_on_debian({"base_image": FLYTE_RUNTIME, "layers": []}, tmp_path, debian_recipe="light")
    # not a reference to the bare base: flyte's runtime image, rebuilt on it
    assert r.dockerfile is not None and r.dockerfile.startswith("FROM local/py:3.11\n")
    lines = r.dockerfile.splitlines()
    assert lines[1:] == df.runtime_recipe("v2.12.1", "light")
    assert "pip install --disable-pip-version-check 'flyte==2.12.1'" in r.dockerfile
    assert df.PIP_CACHE_MOUNT in r.dockerfile  # the installer's downloads are kept between builds
    assert 'ENV VIRTUAL_ENV="/opt/venv" PATH="/opt/venv/bin:$PATH" PYTHONPATH="/root"' in r.dockerfile
    assert lines[-2:] == ["USER flyte", "WORKDIR /home/flyte"]  # flyte's released image runs as `flyte`


def test_layers_on_the_runtime_share_its_lines_and_run_as_flyte_does(tmp_path: Path) -> None:
    plain = _render_on_debian({"base_image": FLYTE_RUNTIME, "layers": []}, tmp_path)
    layered = _render_on_debian({"base_image": FLYTE_RUNTIME, "layers": [{"type": "PipPackages", "packages": ["six==1.17.0"]}]}, tmp_path)
    # every env starting from the runtime renders the same prefix: one flyte install on the engine
    assert layered.dockerfile.startswith(plain.dockerfile)
    rest = layered.dockerfile[len(plain.dockerfile):].splitlines()
    # flyte's builder starts with `USER root` and adds no `USER flyte` back for such layers
    assert rest[0] == "USER root" and "USER flyte" not in rest
    assert "'six==1.17.0'" in rest[-1]
    # the full recipe keeps flyte's toolchain layer; the light one leaves it to the base
    assert "build-essential" in plain.dockerfile
    assert "build-essential" not in _render_on_debian({"base_image": FLYTE_RUNTIME, "layers": []}, tmp_path, debian_recipe="light").dockerfile


def test_install_flyte_false_recipe_ends_as_the_flyte_user(tmp_path: Path) -> None:
    user = {"type": "Commands", "commands": [df.FLYTE_USER_CMD]}
    r = _render_on_debian({"base_image": "python:3.11-slim-bookworm", "layers": [user, {"type": "WorkDir", "workdir": "/home/flyte"}]}, tmp_path)
    assert r.dockerfile.splitlines()[-2:] == ["USER flyte", "WORKDIR /home/flyte"]
    assert "pip install" not in r.dockerfile  # install_flyte=False: no flyte, as with flyte's builder


def test_classic_builder_gets_the_dockerfile_without_cache_mounts() -> None:
    text = f"FROM x\nRUN {df.PIP_CACHE_MOUNT} pip install y\nRUN echo z\n"
    assert df.without_cache_mounts(text) == "FROM x\nRUN pip install y\nRUN echo z\n"


def test_an_unmapped_runtime_stays_flytes_released_image(tmp_path: Path) -> None:
    r = df.render({"base_image": FLYTE_RUNTIME, "layers": []}, tmp_path, df.Options(), "`e`", lambda rel: {})
    assert r.dockerfile is None and r.base == FLYTE_RUNTIME  # pulled as is where it can be


def test_dry_run_warns_when_it_cannot_resolve_an_image(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "pixirepo"\nversion = "0"\n')
    (repo / "pixi.toml").write_text('[workspace]\nname = "p"\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n')
    (repo / "envs.py").write_text(
        "from pathlib import Path\nimport flyte\n\n"
        "env = flyte.TaskEnvironment('pixienv', image=flyte.Image.from_debian_base(registry='127.0.0.1:5000/x')"
        ".with_pixi_project(Path(__file__).parent / 'pixi.toml'))\n\n"
        "@env.task\nasync def t() -> int:\n    return 1\n"
    )
    run = flyte_build("deploy", "--dry-run", "--json", cwd=repo, cache=tmp_path / "cache")
    assert run.rc == 0, run.err
    doc = run.json()
    (warning,) = [w for w in doc["warnings"] if "pixienv" in w]
    assert "flyte-build cannot resolve this env's image" in warning and "pixi layers are not supported" in warning
    (env,) = doc["targets"]
    assert env["image"] in warning  # the URI the plan names is flyte's, and the warning says so


# -- differential: the same layers through flyte's own builder (flyte/_internal/imagebuild) ------
def test_secret_ids_and_host_lookup_match_flytes_builder(tmp_path: Path, monkeypatch) -> None:
    import re

    from flyte import Secret
    from flyte._internal.imagebuild import docker_builder as fb

    secrets = [Secret(key="gh-token"), Secret(key="pat", group="ci", as_env_var="PAT"), Secret(key="apt", mount="/etc/flyte/secrets")]
    spec = [{"type": "Secret", "key": s.key, "group": s.group, "mount": str(s.mount) if s.mount else None, "as_env_var": s.as_env_var} for s in secrets]
    r = _render(tmp_path, [{"type": "Commands", "commands": ["true"], "secret_mounts": spec}])
    theirs = fb._get_secret_mounts_layer(tuple(secrets))
    assert sorted(re.findall(r"id=(\d+)", theirs)) == sorted(i for i, _, _ in r.secrets)  # the same secret ids
    assert "target=/etc/flyte/secrets" in theirs and "target=/etc/flyte/secrets" in r.dockerfile
    # flyte's CLI side: the env var it reads on the building machine, per id
    for key in ("GH-TOKEN", "CI_PAT", "APT"):
        monkeypatch.setenv(key, "x")
    from flyte._image import Commands

    cli = fb._get_secret_commands((Commands(commands=("true",), secret_mounts=tuple(secrets)),))
    flyte_env = dict(re.findall(r"id=(\d+),env=(\S+)", " ".join(cli)))
    assert flyte_env == {i: env for i, env, _ in r.secrets}


def test_uv_script_dependencies_match_flytes_parser(tmp_path: Path) -> None:
    from flyte._utils import parse_uv_script_file

    script = tmp_path / "job.py"
    script.write_text('#!/usr/bin/env -S uv run --script\n# /// script\n# requires-python = ">=3.11"\n'
                      '# dependencies = [\n#   "six==1.17.0",\n#   "toolz>=0.12",\n# ]\n# ///\nprint(1)\n')
    header = parse_uv_script_file(script)
    r = _render(tmp_path, [{"type": "UVScript", "script": "job.py"}])
    assert header.dependencies == ["six==1.17.0", "toolz>=0.12"]
    assert "python3 -m pip install --no-cache-dir " + " ".join(f"'{d}'" for d in header.dependencies) in r.dockerfile


def test_dockerignore_folder_copy_matches_flytes_context(tmp_path: Path, monkeypatch) -> None:
    from flyte._internal.imagebuild.utils import copy_files_to_context

    from flyte_build.archives import bundle_files as files_mod

    src = tmp_path / "root" / "assets"
    for rel in ("keep.txt", "big.bin", "sub/x.bin", "sub/keep.md", "logs/a.log", "logs/keep.log", "docs/notes.txt"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    patterns = ["**/*.bin", "logs/", "!logs/keep.log", "docs"]
    (tmp_path / "root" / "ci.dockerignore").write_text("\n".join(patterns) + "\n")
    ctx = tmp_path / "flyte-context"
    monkeypatch.chdir(tmp_path / "root")  # flyte copies a relative source under its own name
    copy_files_to_context(Path("assets"), ctx, patterns)
    theirs = sorted(p.relative_to(ctx).as_posix() for p in ctx.rglob("*") if p.is_file())
    root = tmp_path / "root"
    r = df.render({"base_image": "b:1", "layers": [
        {"type": "DockerIgnore", "path": "ci.dockerignore"},
        {"type": "CopyConfig", "path_type": 1, "src": "assets", "dst": "/app"}]}, root, df.Options(), "`e`",
        lambda rel: files_mod.walk(root, start=rel).files)
    ours = sorted(n[len("src/"):] for n, _ in r.context)
    assert ours == theirs == ["assets/keep.txt", "assets/logs/keep.log", "assets/sub/keep.md"]


def test_with_local_v2_reads_flytes_dist_folder(tmp_path: Path) -> None:
    from flyte._image import DIST_FOLDER

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "localv2"\nversion = "0"\n')
    (repo / "envs.py").write_text("import flyte\n\nenv = flyte.TaskEnvironment('localv2', image=flyte.Image.from_debian_base().with_local_v2())\n")
    t = _targets(repo, tmp_path / "cache")["image:localv2"]
    if any(DIST_FOLDER.glob("flyte-*.whl")):  # a flyte source checkout with its wheel built
        assert t["uri"] and t["image_mode"] == "build"
    else:
        assert t["uri"] is None
        assert f"the wheel folder '{DIST_FOLDER}' holds no wheel of 'flyte' (with_local_v2 reads flyte's own dist/ folder" in t["image_error"]
