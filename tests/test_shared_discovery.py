"""Discovery through the shared cache: a fresh machine (another checkout path,
an empty local cache) takes the environments from the store, verified against
its own files, and imports neither flyte nor any user module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.cli import build_json, copy_sample, digests

# builds through the Python API, then names every flyte or user module the process imported
PROBE = (
    "import json, sys\n"
    "from flyte_build.workspace import Settings, Workspace\n"
    "ws = Workspace(Settings(cache=sys.argv[1]))\n"
    "res = ws.build()\n"
    "print(json.dumps({'how': ws.discovery.how, 'digests': {r.target: r.digest for r in res},\n"
    "  'sources': sorted({str(r.source) for r in res}), 'corrupt': ws.cache.stats.corrupt, 'warnings': ws.all_warnings(),\n"
    "  'imported': sorted(m for m in sys.modules if m == 'flyte' or m.startswith(('flyte.', 'services', 'libs')))}))\n"
)


from flyte_build.stores.signing import keygen  # noqa: E402

PRIVATE, PUBLIC = keygen()
SIGNER = {"FLYTE_BUILD_CACHE_SIGNING_KEY": PRIVATE}  # discovery results are shared only signed (issue 24)
READER = {"FLYTE_BUILD_CACHE_VERIFY_KEYS": PUBLIC}


def _probe(checkout: Path, cache: Path, url: str, env: dict | None = None) -> dict:
    env = READER if env is None else env
    proc = subprocess.run([sys.executable, "-c", PROBE, url], cwd=checkout, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "FLYTE_BUILD_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _entries(shared: Path) -> list[Path]:
    return sorted((shared / "discovery").rglob("*.json.gz"))


@pytest.mark.timeout(300)
def test_fresh_machine_takes_discovery_from_the_shared_cache(tmp_path):
    shared = tmp_path / "shared"
    url = f"file://{shared}"
    a = copy_sample(tmp_path / "a" / "checkout")
    first = build_json(a, tmp_path / "a" / "cache", "--cache", url, env=SIGNER)
    assert first["discovery"]["how"] == "full"
    (entry,) = _entries(shared)

    b = copy_sample(tmp_path / "b" / "elsewhere" / "checkout")  # another path, same sources
    got = _probe(b, tmp_path / "b" / "cache", url)
    assert got["how"] == "shared"
    assert got["imported"] == []  # neither flyte nor user code
    assert got["digests"] == digests(first)
    assert got["sources"] == ["shared"]

    # a discovery entry that does not parse: refused with a warning, discovered afresh, same answer
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 2])
    c = copy_sample(tmp_path / "c" / "checkout")
    got = _probe(c, tmp_path / "c" / "cache", url)
    assert got["how"] == "full" and got["corrupt"] >= 1
    assert any("refused" in w and "discovery" in w for w in got["warnings"])
    assert got["digests"] == digests(first)
    entry.write_bytes(good)

    # an entry whose record of a file read does not match this checkout: not used
    doc = json.loads(zlib.decompress(good))
    doc["files"]["libs/common/stats.py"] = "0" * 64
    entry.write_bytes(zlib.compress(json.dumps(doc).encode()))
    d = copy_sample(tmp_path / "d" / "checkout")
    got = _probe(d, tmp_path / "d" / "cache", url)
    assert got["how"] == "full"
    assert got["digests"] == digests(first)

    # an edited source is another key: discovered afresh, never served the old result
    entry.write_bytes(good)
    e = copy_sample(tmp_path / "e" / "checkout")
    with open(e / "services" / "inference" / "tasks.py", "a") as f:
        f.write("\n# edited\n")
    got = _probe(e, tmp_path / "e" / "cache", url, env={**READER, **SIGNER})
    assert got["how"] == "full"
    assert len(_entries(shared)) == 2


@pytest.mark.servers
@pytest.mark.timeout(300)
def test_fresh_machine_takes_discovery_from_s3(tmp_path):
    endpoint = servers.s3_bucket("flyte-cache")
    env = {**servers.S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    url = f"s3://flyte-cache/shared-discovery-{os.getpid()}"
    a = copy_sample(tmp_path / "a")
    first = build_json(a, tmp_path / "cache-a", "--cache", url, env={**env, **SIGNER})
    got = _probe(copy_sample(tmp_path / "b"), tmp_path / "cache-b", url, env={**env, **READER})
    assert got["how"] == "shared" and got["imported"] == []
    assert got["digests"] == digests(first)


@pytest.mark.timeout(300)
def test_signed_discovery_entries_are_checked_with_the_verify_keys(tmp_path):
    from flyte_build.stores.signing import keygen

    private, public = keygen()
    _, other = keygen()
    url = f"file://{tmp_path / 'shared'}"
    first = build_json(copy_sample(tmp_path / "a"), tmp_path / "cache-a", "--cache", url,
                       env={"FLYTE_BUILD_CACHE_SIGNING_KEY": private})
    trusted = _probe(copy_sample(tmp_path / "b"), tmp_path / "cache-b", url, env={"FLYTE_BUILD_CACHE_VERIFY_KEYS": public})
    assert trusted["how"] == "shared" and trusted["imported"] == []
    assert trusted["digests"] == digests(first)
    # a reader trusting another key refuses the result and discovers for itself
    wary = _probe(copy_sample(tmp_path / "c"), tmp_path / "cache-c", url, env={"FLYTE_BUILD_CACHE_VERIFY_KEYS": other})
    assert wary["how"] == "full"
    assert any("discovery entry: signed by a key not in cache-verify-keys" in w for w in wary["warnings"])
    assert wary["digests"] == digests(first)


@pytest.mark.timeout(60)
def test_the_batch_name_check_agrees_with_the_one_name_check():
    """A shared entry's file names are checked all at once (`carried_imports.all_plain`);
    it must refuse exactly the lists holding a name the one-name check refuses."""
    import random

    from flyte_build.discovery.carried_imports import all_plain
    from flyte_build.stores import shared_discovery as sd

    rnd = random.Random(5)
    alphabet = ["a", "b", ".", "..", "/", "\\", "\0", "\n", "é", "x.py", " "]
    names = ["", ".", "..", "/", "a", "a/", "/a", "a//b", "a/./b", "a/../b", "./a", "a/.", "a/..", "..a", "a..", ".a/b.",
             "a\n/b", "a/\n", "\n", "a\\b", "a\0b", "pkg/mod.py", "...", "a/.../b"]
    names += ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 7))) for _ in range(3000)]
    for n in names:
        assert all_plain([n]) == sd._rel_ok(n), repr(n)
    for _ in range(500):
        group = rnd.sample(names, 4)
        assert all_plain(group) == all(sd._rel_ok(n) for n in group), group
    assert all_plain([]) and not all_plain(["a", 1]) and not all_plain([None])
