"""check:<env>'s program, which runs inside the env's image (see below): this
module is sent whole as `python -c`, so it imports only the standard library
at module level and nothing of flyte_build."""

from __future__ import annotations

import os


# -- check:<env> ------------------------------------------------------------------
#
# `check_in_image` runs INSIDE the env's image, under the interpreter of its `a0`:
# the check rule sends this module's source as `python -c` (the image has flyte,
# not flyte-build; everything above imports only the standard library at module
# level). It does what flyte's runtime does before a task starts: put `.` and
# _F_SYS_PATH on sys.path, fetch and extract the `--tgz` bundle into `--dest`
# (flyte's own download_code_bundle), then load each task with the spec's
# resolver and loader args (flyte's own load_task).

CHECK_MARKER = "@@flyte-build:check@@"


def _load_error(exc: BaseException) -> str:
    # load_task re-raises a ModuleNotFoundError with a long diagnostic: report its cause
    cause = exc.__cause__ if isinstance(exc, ModuleNotFoundError) and isinstance(exc.__cause__, ImportError) else exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def check_in_image(req: dict) -> dict:
    """req: {"tgz", "dest", "version", "tasks": [{"name", "resolver", "resolver_args"}]}."""
    import asyncio
    import shutil
    import sys
    from importlib.metadata import PackageNotFoundError, version

    out: dict = {"a0": shutil.which("a0"), "python": sys.executable, "flyte": None, "user": None,
                 "cwd": os.getcwd(), "tasks": {}, "bundle_error": None}
    try:
        import pwd

        out["user"] = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        out["user"] = str(os.getuid())
    try:
        out["flyte"] = version("flyte")
    except PackageNotFoundError:
        return out
    sys.path.insert(0, ".")  # as a0 does before anything else
    try:
        from flyte._internal.runtime.entrypoints import download_code_bundle, load_task
        from flyte._utils import adjust_sys_path
        from flyte.models import CodeBundle

        if req.get("tgz"):
            bundle = CodeBundle(tgz=req["tgz"], destination=req.get("dest") or ".", computed_version=req["version"])
            asyncio.run(download_code_bundle(bundle))
        else:
            adjust_sys_path()
    except Exception as exc:  # noqa: BLE001 - reported as the check's finding
        out["bundle_error"] = _load_error(exc)
        return out
    for t in req["tasks"]:
        try:
            load_task(t["resolver"], *t["resolver_args"])
            out["tasks"][t["name"]] = None
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything at import
            if isinstance(exc, KeyboardInterrupt):
                raise
            out["tasks"][t["name"]] = _load_error(exc)
    return out


def check_program() -> str:
    """The `python -c` program that runs `check_in_image(json.loads(sys.argv[1]))` and
    prints its result after CHECK_MARKER (flyte's logging may print before it)."""
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    return source + (
        "\n\nif __name__ == '__main__':\n"
        "    import json as _json, sys as _sys\n"
        "    _res = check_in_image(_json.loads(_sys.argv[1]))\n"
        "    print(CHECK_MARKER + _json.dumps(_res), flush=True)\n"
    )
