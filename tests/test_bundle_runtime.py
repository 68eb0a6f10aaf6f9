"""A bundle is usable by Flyte's runtime: extracted by the SDK's own code path
into a fresh directory, its env's task imports and runs from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.support.cli import build_json, copy_sample

EXPECTED = "[trend-report] n=6 slope=2.271 intercept=-0.595 rmse=1.799 mean=3.917 |=+ #%@|"


def test_sdk_extracts_bundle_and_task_runs_from_it(tmp_path):
    repo = copy_sample(tmp_path / "repo")
    doc = build_json(repo, tmp_path / "cache", "bundle:visualization")
    (rec,) = doc["targets"]
    dest = tmp_path / "container-workdir"
    # The runtime's path: flyte.extend.download_code_bundle(CodeBundle(tgz=...)), then import
    # the task from the extracted tree and run it (locally). The assets come from the image's
    # with_source_folder layer, which VIZ_ASSETS_DIR stands in for here.
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        from flyte.models import CodeBundle
        from flyte.extend import download_code_bundle
        cb = asyncio.run(download_code_bundle(CodeBundle(computed_version="v", destination={str(dest)!r}, tgz={rec['path']!r})))
        sys.path.insert(0, {str(dest)!r})
        import flyte
        flyte.init()
        from services.visualization.tasks import report_pipeline
        import services.visualization.tasks as mod
        out = flyte.run(report_pipeline, n=6).outputs()[0]
        print(json.dumps({{"out": out, "from": mod.__file__}}))
        """
    )
    env = dict(os.environ, VIZ_ASSETS_DIR=str(repo / "services/visualization/assets"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["out"] == EXPECTED
    assert result["from"].startswith(str(dest))
    assert (dest / "services/visualization/render.py").is_file()
    assert not (dest / "services/inference").exists()
