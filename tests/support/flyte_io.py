"""A task's inputs and outputs in Flyte's own formats, and its local result.

Run as a script in a child process whose working directory is the project
root (it imports the user's task module and flyte):

    python tests/support/flyte_io.py prepare '[{"module", "task", "kwargs", "inputs_uri"}, ...]'
    python tests/support/flyte_io.py outputs '[{"module", "task", "output_prefix"}, ...]'

`prepare` writes each inputs.pb with flyte's converters (convert_from_native_to_inputs,
io.upload_inputs) and runs the task locally (flyte.run), answering that result;
`outputs` reads each outputs.pb (io.load_outputs, convert_outputs_to_native), or
the error.pb the runtime wrote instead. The object store is S3 from the
FLYTE_AWS_* variables. The answer (a list, in order) is one JSON line after MARKER.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys

MARKER = "@@flyte-io@@"


def _task(req: dict):
    sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(req["module"]), req["task"])


def prepare(req: dict) -> dict:
    import flyte
    from flyte._internal.runtime import io
    from flyte._internal.runtime.convert import convert_from_native_to_inputs

    task = _task(req)
    inputs = asyncio.run(convert_from_native_to_inputs(task.native_interface, **req["kwargs"]))
    asyncio.run(io.upload_inputs(inputs, req["inputs_uri"]))
    local = flyte.with_runcontext(mode="local").run(task, **req["kwargs"])
    return {"local": local.outputs()[0] if hasattr(local, "outputs") else local}


def outputs(req: dict) -> dict:
    from flyte._internal.runtime import io
    from flyte._internal.runtime.convert import convert_outputs_to_native

    task = _task(req)
    prefix = req["output_prefix"]
    try:
        out = asyncio.run(io.load_outputs(io.outputs_path(prefix)))
    except Exception as exc:  # noqa: BLE001 - look for the runtime's error instead
        try:
            err = asyncio.run(io.load_error(io.error_path(prefix)))
            return {"error": f"{err.code}: {err.message}"}
        except Exception:  # noqa: BLE001
            return {"error": f"no outputs.pb under {prefix}: {type(exc).__name__}: {exc}"}
    return {"value": asyncio.run(convert_outputs_to_native(task.native_interface, out))}


if __name__ == "__main__":
    import flyte
    from flyte.storage import S3

    flyte.init(storage=S3.auto())
    mode, items = sys.argv[1], json.loads(sys.argv[2])
    result = [{"prepare": prepare, "outputs": outputs}[mode](item) for item in items]
    print(MARKER + json.dumps(result), flush=True)
