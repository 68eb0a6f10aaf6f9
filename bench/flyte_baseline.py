"""What `flyte deploy --recursive ROOT` does to bundle, and nothing more.

Run as a child process: import flyte, initialise it as `flyte deploy` does
(the CLI's own `CLIConfig.init`: `flyte.config.auto()`, then
`flyte.init_from_config` with the root directory and local sys.path sync),
load every module under the root the way the CLI does (`load_python_modules`),
then build the one code bundle with the SDK's own `build_code_bundle` (dry
run: no upload). Prints the bundle's file count and path as JSON.
Usage: python -m bench.flyte_baseline ROOT OUTDIR
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path


def main() -> None:
    root, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(root))
    os.chdir(root)
    import click
    import flyte.config
    from flyte._code_bundle.bundle import build_code_bundle
    from flyte._utils.module_loader import load_python_modules
    from flyte.cli._common import CLIConfig

    # what `flyte deploy --recursive ROOT` runs before loading the modules
    # (`initialize_config`: no project, domain or images given)
    CLIConfig(flyte.config.auto(), click.Context(click.Command("deploy"))).init(None, None, str(root), None, True)

    _, failed = load_python_modules(root, root, recursive=True)
    if failed:
        raise SystemExit(f"flyte could not load {len(failed)} modules, first: {failed[0]}")
    bundle = asyncio.run(build_code_bundle(root, dryrun=True, copy_bundle_to=out, copy_style="loaded_modules"))
    print(json.dumps({"files": len(bundle.files or []), "path": bundle.tgz}))


if __name__ == "__main__":
    main()
