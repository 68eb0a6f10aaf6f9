"""Running discovery's child: its request, the compiled code handed to it, and
its deadline (`discovery-timeout`); the child itself is `child`, how any
child of ours runs is `children`'s.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import interpreter
from ..config.settings import Config
from ..stores.file_digests import FileDigests

if TYPE_CHECKING:
    from .discover import Selection

DEFAULT_TIMEOUT = 300.0  # seconds; config `discovery-timeout`, flag --discovery-timeout


def handing(cfg: Config, files: list[str], digests: FileDigests, memo):
    """What the parent does while the child imports: hand it the code of `files`
    (from the memo, else compiled); None without a memo (another Python)."""
    from . import code as discovery_code

    if memo is None:
        return None
    def hand(request: dict, running=None) -> None:  # `running`: see `run_child`; the handing-over runs to its end
        discovery_code.prefetch(cfg.root, files, digests, request["handed"], request["progress"], memo)

    return hand


def meanwhile(cfg: Config, files: list[str], digests: FileDigests, handing, ahead: dict):
    """What the parent does while a cold child runs: hand it code (`handing`),
    then, while it still runs, resolve and deflate ahead (`window`), the
    resolutions into `ahead`."""
    from . import window

    def work(request: dict, running) -> None:
        if handing is not None:
            handing(request)
        ahead.update(window.ahead(cfg.root, cfg.source_roots, files, digests, running))

    return work


def child_request(cfg: Config, mode: str, targets: list[str], candidates: list[str], sel: Selection) -> dict:
    return {
        "root": str(cfg.root),
        "mode": mode,
        "targets": targets,
        "variable": sel.variable,
        "all": sel.all,
        "files": candidates,
        "project": cfg.project,
        "domain": cfg.domain,
        "flyte_config": cfg.flyte_config,
        "source_roots": list(cfg.source_roots),
        "ignore_load_errors": cfg.ignore_load_errors,
    }


def run_child(cfg: Config, mode: str, targets: list[str], candidates: list[str], sel: Selection, while_waiting=None) -> dict:
    """The child's result; `while_waiting(request, running)` runs meanwhile."""
    from ..processes import children

    request = child_request(cfg, mode, targets, candidates, sel)
    with tempfile.TemporaryDirectory(prefix="flyte-build-discover-") as tmp:
        req_path = os.path.join(tmp, "request.json")
        res_path = os.path.join(tmp, "result.json")
        progress = request["progress"] = os.path.join(tmp, "progress")
        if while_waiting is not None:  # it compiles the candidates for the child (discovery_code)
            request["handed"] = os.path.join(tmp, "code")
            open(request["handed"], "wb").close()
        Path(req_path).write_text(json.dumps(request))
        lib = children.stage_package(tmp)
        # the child's output goes to a file, not a pipe: we do other work while
        # it runs, and a chatty module must not block on a full pipe meanwhile
        python = interpreter.of(cfg, None).path  # probed already (`_settings`)
        cmd = children.command(python, lib, children.own_script(lib, "discovery/child.py"), req_path, res_path)
        children.run(cmd, str(cfg.root), children.child_environ(),
                     timeout_of(cfg), "discovery", tmp, progress, res_path,
                     (lambda running: while_waiting(request, running)) if while_waiting is not None else None)
        return json.loads(Path(res_path).read_text())


def timeout_of(cfg) -> float:
    return getattr(cfg, "discovery_timeout", None) or DEFAULT_TIMEOUT
