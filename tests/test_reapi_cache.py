"""The shared cache over REAPI v2 (`--cache grpc://…`, `grpcs://…`) against a
real BuildGrid server on loopback (tests/support/buildgrid.py).

Each "machine" is a checkout of sample_monorepo at its own path with its own
empty local cache; they meet only through the server. What the object-store
tests (test_shared_cache.py) promise is checked here over REAPI: machine B
rebuilds nothing, entries are ActionResults naming the bundles' digests,
tampered entries are refused, large blobs go through ByteStream, a server that
goes away costs one warning (or fails the run under --cache-required), and a
server that wants a token gets it without the token being shown or kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from flyte_build.errors import BuildFailed
from flyte_build.stores import signing
from flyte_build.stores.action_entry import ActionEntry, Output
from flyte_build.stores.reapi_proto import remote_execution_pb2 as pb
from flyte_build.stores.reapi_store import ENTRY_FILE, ReapiRoot, _action, _digest_of, open_reapi
from flyte_build.stores.remote_stores import BadObject, StoreOptions
from flyte_build.stores.shared_cache import action_rel, blob_rel
from flyte_build.workspace import Settings, Workspace
from tests.support import buildgrid, tls
from tests.support.cli import copy_sample, copy_tree, flyte_build
from tests.support.repos import Cli, env_module, make_repo
from tests.support.requirements import require
from tests.support.servers import SilentServer, closed_port_url

pytestmark = pytest.mark.timeout(300)

PRIVATE, PUBLIC = signing.keygen()
BGD = "BuildGrid's bgd (bash .ci/provision.sh installs it; or set FLYTE_BUILD_BGD)"


def _url(fresh: bool = True) -> str:
    """The session server's URL: with an empty instance of this test's own (`fresh`),
    else the instance every test whose objects are its own shares."""
    url = buildgrid.session_server()
    require(url is not None, BGD)
    return f"{url}/{buildgrid.fresh_instance()}" if fresh else url


class Machine:
    """One checkout with its own local cache."""

    def __init__(self, base: Path, name: str, config: str = ""):
        self.checkout = copy_sample(base / name / "checkout")
        if config:
            with open(self.checkout / "pyproject.toml", "a") as f:
                f.write("\n" + config)
        self.cache = base / name / "local-cache"

    def run(self, *args: str, env: dict | None = None):
        return flyte_build(*args, cwd=self.checkout, cache=self.cache, env={"CI": "1", **(env or {})})

    def build(self, *args: str, env: dict | None = None, expect: int = 0, targets: tuple[str, ...] = ()) -> dict:
        proc = self.run(*args, "build", "--json", *targets, env=env)
        assert proc.rc == expect, proc.describe()
        doc = proc.json()
        doc["stderr"] = proc.err
        return doc


def statuses(doc: dict) -> dict[str, str]:
    return {t["target"]: t["status"] for t in doc["targets"]}


def digests(doc: dict) -> dict[str, str]:
    return {t["target"]: t["digest"] for t in doc["targets"]}


def _root(url: str, **reapi) -> ReapiRoot:
    root = open_reapi(url, StoreOptions(timeout=10, reapi=reapi))
    root.probe()
    return root


# -- the CI scenario ---------------------------------------------------------------------


def test_machine_b_rebuilds_nothing_that_machine_a_built(tmp_path):
    url = _url()
    a, b = Machine(tmp_path, "a"), Machine(tmp_path, "b")
    doc_a = a.build("--cache", url)
    doc_b = b.build("--cache", url)

    assert set(statuses(doc_a).values()) == {"built"} and len(doc_a["targets"]) == 6
    assert set(statuses(doc_b).values()) == {"cached"} and {t["source"] for t in doc_b["targets"]} == {"shared"}
    assert digests(doc_a) == digests(doc_b)
    assert doc_b["cache"]["shared_hits"] == 6 and doc_b["cache"]["misses"] == 0 and doc_b["cache"]["bytes_up"] == 0
    assert doc_a["cache"]["bytes_up"] > 0 and doc_b["cache"]["bytes_down"] > 0
    # the REAPI calls each machine made: A uploads in batches, B reads in batches and writes nothing
    calls_a, calls_b = doc_a["cache"]["remote"]["calls"], doc_b["cache"]["remote"]["calls"]
    assert calls_a["GetCapabilities"] == 1 and calls_a["BatchUpdateBlobs"] >= 6 and calls_a["UpdateActionResult"] >= 6
    assert calls_b["BatchReadBlobs"] >= 6 and "BatchUpdateBlobs" not in calls_b and "UpdateActionResult" not in calls_b
    assert doc_b["cache"]["remote"]["max_batch_bytes"] == 4193280  # BuildGrid's limit, read from GetCapabilities

    # each entry is an ActionResult whose output files carry the bundle's sha256 digest and size
    root = _root(url)
    for t in doc_a["targets"]:
        rel = action_rel(t["key"])
        result = root.action_result(rel)
        files = {f.path: (f.digest.hash, f.digest.size_bytes) for f in result.output_files}
        bundle = Path(t["path"]).read_bytes()
        assert files["bundle.tar.gz"] == (t["digest"].removeprefix("sha256:"), len(bundle))
        entry = ActionEntry.parse(t["key"], root.read(rel, 1 << 20))
        assert files[ENTRY_FILE][1] == len(entry.to_json()) and entry.target == t["target"]

    stats = b.run("cache", "stats").out
    assert f"shared cache {url}: 6 hits, 0 misses" in stats
    assert "reapi-v2 calls: BatchReadBlobs" in stats and "UpdateActionResult" not in stats


# -- trust -----------------------------------------------------------------------------


def _trojan(root: ReapiRoot, key: str, tmp: Path) -> str:
    """Remap the signed entry of `key` to a bundle of the attacker's, straight in the
    server (a new blob, a new ActionResult whose files agree with the altered entry);
    the signature is the writer's, over the old outputs. Returns the trojan's digest."""
    rel = action_rel(key)
    doc = json.loads(root.read(rel, 1 << 20))
    assert doc["sig"], "machine A signs its entries"
    blob = b"\x1f\x8b trojan bundle " * 100
    hex_ = hashlib.sha256(blob).hexdigest()
    (tmp / "trojan").write_bytes(blob)
    root.put_content(blob_rel(hex_), tmp / "trojan", len(blob))
    doc["outputs"] = [{"name": "bundle.tar.gz", "digest": hex_, "size": len(blob)}]
    assert root.put_bytes(rel, json.dumps(doc).encode(), create_only=False)
    return hex_


def test_a_tampered_signed_entry_is_refused_and_rebuilt(tmp_path):
    url = _url()
    a, b = Machine(tmp_path, "a"), Machine(tmp_path, "b")
    doc_a = a.build("--cache", url, env={signing.SIGNING_KEY_ENV: PRIVATE})
    victim = next(t for t in doc_a["targets"] if t["target"].startswith("bundle:"))
    trojan = _trojan(_root(url), victim["key"], tmp_path)

    # B asks for that target alone (no build manifest of A's carries it) and refuses the altered entry
    doc_b = b.build("--cache", url, targets=(victim["target"],), env={signing.VERIFY_KEYS_ENV: PUBLIC})
    (t,) = [t for t in doc_b["targets"] if t["target"] == victim["target"]]
    assert t["status"] == "built" and t["digest"] == victim["digest"] != f"sha256:{trojan}"
    assert doc_b["cache"]["corrupt"] >= 1
    assert any("refused" in w and action_rel(victim["key"]) in w for w in doc_b["warnings"]), doc_b["warnings"]


def test_an_action_result_that_disagrees_with_its_entry_is_refused(tmp_path):
    """Without keys a reader still refuses an ActionResult whose artifact files are
    not the ones its entry names (the entry is what a reader checks), and reads no
    entry over its limit."""
    root = _root(_url(fresh=False))
    blobs = {}
    for name in ("bundle", "another bundle"):
        data = name.encode() * 10
        blobs[name] = (hashlib.sha256(data).hexdigest(), len(data))
        (tmp_path / name).write_bytes(data)
        root.put_content(blob_rel(blobs[name][0]), tmp_path / name, len(data))
    key = hashlib.sha256(b"an action").hexdigest()
    rel = action_rel(key)
    entry = ActionEntry(key, "bundle:a", (Output("bundle.tar.gz", *blobs["bundle"]),))
    assert root.put_bytes(rel, entry.to_json()) is True
    assert root.put_bytes(rel, entry.to_json()) is False  # create-only: it is there
    assert root.read(rel, 1 << 20) == entry.to_json()
    # the same entry, its ActionResult now naming another blob (one the server holds:
    # BuildGrid drops results that name missing ones)
    result = root.action_result(rel)
    for f in result.output_files:
        if f.path != ENTRY_FILE:
            f.digest.hash, f.digest.size_bytes = blobs["another bundle"]
    root.client.call("UpdateActionResult", root.client.ac.UpdateActionResult, pb.UpdateActionResultRequest(
        instance_name=root.client.ep.instance, action_digest=_digest_of(_action(rel)[0]), action_result=result))
    with pytest.raises(BadObject, match="output files are not the outputs its entry names"):
        root.read(rel, 1 << 20)
    with pytest.raises(BadObject, match="over 10 bytes"):
        root.read(rel, 10)  # refused on the size the ActionResult declares, before a byte is fetched


# -- large blobs ----------------------------------------------------------------------------


def test_a_blob_over_the_batch_limit_goes_through_bytestream(tmp_path):
    url = _url(fresh=False)
    root = _root(url)
    data = os.urandom(5 << 20)  # over BuildGrid's 4,193,280-byte batch limit
    hex_ = hashlib.sha256(data).hexdigest()
    src = tmp_path / "big"
    src.write_bytes(data)
    assert root.put_content(blob_rel(hex_), src, len(data)) is True
    assert root.put_content(blob_rel(hex_), src, len(data)) is False  # FindMissingBlobs: there already
    dest = tmp_path / "back"
    _root(url).get_file(blob_rel(hex_), dest, len(data))
    assert dest.read_bytes() == data
    stats = root.stats()
    assert stats["calls"]["ByteStream.Write"] == 1 and "BatchUpdateBlobs" not in stats["calls"]
    assert stats["bytestream_bytes"]["written"] == len(data)


# -- a server that is away, hangs or stops -------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("reapi") / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a")})


def _cli(repo: Path, tmp: Path, name: str, **env: str) -> Cli:
    return Cli(repo, tmp / name, env={"CI": "1", **env})


def _warned(doc: dict) -> list[str]:
    return [w for w in doc["warnings"] if "shared cache unavailable" in w]


def test_an_unreachable_or_hung_server_costs_one_warning(repo, tmp_path):
    closed = closed_port_url().replace("http://", "grpc://")
    run = _cli(repo, tmp_path, "closed").build("--cache", closed)
    run.assert_ok()
    assert set(run.digests()) and len(_warned(run.json())) == 1 and run.err.count("shared cache unavailable") == 1
    required = _cli(repo, tmp_path, "required").run("--cache", closed, "--cache-required", "build")
    assert required.rc == 1 and "shared cache unavailable (cache-required)" in required.err
    assert "Traceback" not in required.err and len(required.err.strip().splitlines()) == 1, required.err

    silent = SilentServer()  # accepts connections, never answers: every call runs into its deadline
    try:
        (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + "\n[tool.hatch.build.targets.flyte.object-store]\ntimeout = 2\n")
        t0 = time.perf_counter()
        hung = _cli(repo, tmp_path, "hung").build("--cache", silent.url.replace("http://", "grpc://"))
        elapsed = time.perf_counter() - t0
    finally:
        silent.close()
        (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text().replace("\n[tool.hatch.build.targets.flyte.object-store]\ntimeout = 2\n", ""))
    hung.assert_ok()
    assert elapsed < 45 and len(_warned(hung.json())) == 1 and "DEADLINE_EXCEEDED" in _warned(hung.json())[0]


def test_a_server_that_stops_mid_build_costs_one_warning_or_fails_a_required_run(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "1")
    server = buildgrid.BuildGrid.start(tmp_path / "bg")
    require(server is not None, BGD)
    # two runs open the cache (GetCapabilities answers); then the server goes away
    ws = {required: Workspace(Settings(root_dir=str(repo), cache=server.url, cache_required=required,
                                       cache_dir=str(tmp_path / f"local-{required}"))) for required in (False, True)}
    assert all(w.cache.shared is not None for w in ws.values())
    server.stop()
    results = ws[False].build()
    assert results and {r.status for r in results} == {"built"}
    warned = [w for w in ws[False].all_warnings() if "shared cache unavailable" in w]
    assert len(warned) == 1 and server.url in warned[0] and "UNAVAILABLE" in warned[0], ws[False].all_warnings()
    with pytest.raises(BuildFailed, match=r"shared cache unavailable \(cache-required\): .*UNAVAILABLE"):
        ws[True].build()


# -- credentials and TLS ----------------------------------------------------------------------


REAPI_TABLE = "\n[tool.hatch.build.targets.flyte.object-store.reapi]\n"


def _with_table(repo: Path, name: str, tmp: Path, keys: str) -> Path:
    """A copy of `repo` whose pyproject.toml has these `object-store.reapi` keys."""
    copy = copy_tree(repo, tmp / name)
    (copy / "pyproject.toml").write_text((copy / "pyproject.toml").read_text() + REAPI_TABLE + keys)
    return copy


def test_a_server_that_wants_a_token_gets_it_and_nothing_keeps_it(repo, tmp_path):
    secret = "s3cret-" + os.urandom(8).hex()
    server = buildgrid.BuildGrid.start(tmp_path / "bg", secret=secret)
    require(server is not None, BGD)
    token = buildgrid.make_token(secret)
    try:
        # no credential: the server refuses, one warning, the build goes on locally
        anon = _cli(repo, tmp_path, "anon").build("--cache", server.url)
        anon.assert_ok()
        assert len(_warned(anon.json())) == 1 and "UNAUTHENTICATED" in _warned(anon.json())[0]
        # a bearer token from an environment variable: A publishes
        by_env = _with_table(repo, "env", tmp_path, 'token-env = "REAPI_TEST_TOKEN"\n')
        a = Cli(by_env, tmp_path / "a", env={"CI": "1", "REAPI_TEST_TOKEN": token})
        built = a.build("--cache", server.url)
        built.assert_ok()
        assert not _warned(built.json()) and built.json()["cache"]["bytes_up"] > 0
        # ... and from a file: B gets everything from the server
        (tmp_path / "token").write_text(token + "\n")
        by_file = _with_table(repo, "file", tmp_path, f'token-file = "{tmp_path / "token"}"\n')
        b = Cli(by_file, tmp_path / "b", env={"CI": "1"})
        got = b.build("--cache", server.url)
        got.assert_ok()
        assert {t["source"] for t in got.json()["targets"]} == {"shared"}
        # the token is in no output and in no file of either local cache
        for run in (built, got, a.run("cache", "stats", "--json"), b.run("config")):
            assert token not in run.out + run.err
        for cache in (tmp_path / "a", tmp_path / "b"):
            assert not [p for p in cache.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
        # the header is configurable (an API key as x-buildbuddy-api-key): this server wants `authorization`
        other = _with_table(repo, "header", tmp_path, 'token-env = "REAPI_TEST_TOKEN"\nheader = "x-buildbuddy-api-key"\n')
        refused = Cli(other, tmp_path / "c", env={"CI": "1", "REAPI_TEST_TOKEN": token}).build("--cache", server.url)
        refused.assert_ok()
        assert len(_warned(refused.json())) == 1 and token not in refused.out + refused.err
    finally:
        server.stop()


def test_grpcs_verifies_the_server_against_the_configured_ca(repo, tmp_path):
    cert = tls.make(tmp_path / "tls")
    server = buildgrid.BuildGrid.start(tmp_path / "bg", tls=(cert.ca, cert.cert, cert.key))
    require(server is not None, BGD)
    try:
        untrusted = _cli(repo, tmp_path, "untrusted").build("--cache", server.url)
        untrusted.assert_ok()
        assert len(_warned(untrusted.json())) == 1
        trusting = _with_table(repo, "ca", tmp_path, f'ca-file = "{cert.ca}"\n')
        run = Cli(trusting, tmp_path / "trusting", env={"CI": "1"}).build("--cache", server.url)
        run.assert_ok()
        assert server.url.startswith("grpcs://") and not _warned(run.json()) and run.json()["cache"]["bytes_up"] > 0
    finally:
        server.stop()


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url,keys,message", [
    ("grpc://127.0.0.1", "", "--cache grpc://127.0.0.1: no port"),
    ("grpc://user:secret@127.0.0.1:1", "", "a grpc URL carries no credentials"),
    ("grpc://127.0.0.1:1", "", "--storage grpc://127.0.0.1:1: unsupported scheme 'grpc' is a --cache only"),
    ("grpc://127.0.0.1:1", 'token-env = "REAPI_UNSET_VARIABLE"\n', "object-store.reapi.token-env: $REAPI_UNSET_VARIABLE is not set"),
    ("grpc://127.0.0.1:1", 'header = "Bad Header"\n', "object-store.reapi.header: 'bad header' is not a gRPC metadata key"),
    ("grpc://127.0.0.1:1", 'ca-file = "/nonexistent/ca.pem"\n', "object-store.reapi.ca-file: cannot read /nonexistent/ca.pem"),
])
def test_bad_grpc_settings_are_one_line_user_errors(repo, tmp_path, url, keys, message):
    checkout = _with_table(repo, "bad", tmp_path, keys) if keys else repo
    flag = "--storage" if message.startswith("--storage") else "--cache"
    run = Cli(checkout, tmp_path / "c", env={"REAPI_UNSET_VARIABLE": None}).run(flag, url, "build")
    last = run.err.strip().splitlines()[-1]
    assert run.rc == 2 and message in last and last.startswith("flyte-build: error:"), run.err
    if flag == "--cache":  # checked before anything runs (a storage URL is checked when a bundle is uploaded)
        assert len(run.err.strip().splitlines()) == 1
