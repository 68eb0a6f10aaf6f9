"""The shared cache and bundle storage against real stores on loopback:
a directory (file://), moto's S3 server, the GCS storage emulator and
Azurite (az://, through adlfs).

Each "machine" is a checkout of sample_monorepo at its own path with its own
empty local cache; they meet only through the shared store.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.cli import Run, copy_sample, flyte_build, popen
from tests.support.requirements import require

REPO = Path(__file__).resolve().parents[1]
TIMES: dict[str, dict[str, float]] = {}


# -- helpers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """A fresh prefix in one kind of store, and the environment that reaches it."""

    kind: str  # file | s3 | gs | az
    url: str
    env: dict

    def fs(self):
        """An independent fsspec view of the store, for assertions."""
        if self.kind == "s3":
            import s3fs

            return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.env["AWS_ENDPOINT_URL"]}, skip_instance_cache=True, use_listings_cache=False)
        if self.kind == "gs":
            import gcsfs

            return gcsfs.GCSFileSystem(token="anon", skip_instance_cache=True, use_listings_cache=False)
        if self.kind == "az":
            import adlfs

            return adlfs.AzureBlobFileSystem(connection_string=self.env["AZURE_STORAGE_CONNECTION_STRING"],
                                             skip_instance_cache=True, use_listings_cache=False)
        import fsspec

        return fsspec.filesystem("file")

    def path(self, rel: str = "") -> str:
        base = self.url.split("://", 1)[1]
        return f"{base}/{rel}".rstrip("/")

    def objects(self, rel: str = "") -> dict[str, bytes]:
        fs = self.fs()
        root = self.path()
        try:
            found = fs.find(self.path(rel))
        except FileNotFoundError:
            return {}
        return {p.split(root.lstrip("/") + "/", 1)[-1]: fs.cat_file(p) for p in found}


def _store(kind: str, name: str) -> Store:
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    if kind == "s3":
        endpoint = servers.s3_bucket("flyte-cache")
        return Store("s3", f"s3://flyte-cache/{prefix}", {**servers.S3_ENV, "AWS_ENDPOINT_URL": endpoint})
    if kind == "gs":
        endpoint = servers.gcs_server()
        require(endpoint is not None, "the GCS storage emulator (pip install gcp-storage-emulator)")
        servers.make_gcs_bucket(endpoint, "flyte-cache")
        return Store("gs", f"gs://flyte-cache/{prefix}", {"STORAGE_EMULATOR_HOST": endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
    if kind == "az":
        conn = servers.azurite_server()
        require(conn is not None, "Azurite, the Azure Storage emulator (npm install -g azurite)")
        servers.make_azure_container(conn, "flyte-cache")
        # adlfs reads the connection string from the environment, as it would a real account's
        return Store("az", f"az://flyte-cache/{prefix}", {"AZURE_STORAGE_CONNECTION_STRING": conn})
    raise AssertionError(kind)


@pytest.fixture
def make_store(tmp_path):
    def make(kind: str, name: str = "cache") -> Store:
        if kind == "file":
            return Store("file", f"file://{tmp_path / 'shared' / name}", {})
        return _store(kind, name)

    return make


@dataclass(frozen=True)
class Machine:
    """One checkout with its own local cache."""

    checkout: Path
    cache: Path

    def run(self, *args: str, env: dict | None = None, timeout: float = 300) -> Run:
        return flyte_build(*args, cwd=self.checkout, cache=self.cache, env=env, timeout=timeout)

    def build(self, *args: str, env: dict | None = None, expect: int = 0) -> dict:
        proc = self.run(*args, "build", "--json", env=env)
        assert proc.rc == expect, proc.describe()
        doc = proc.json()
        doc["stderr"] = proc.err
        return doc


@pytest.fixture
def machine(tmp_path):
    def make(name: str, config: str = "") -> Machine:
        checkout = tmp_path / name / "checkout"
        copy_sample(checkout)
        if config:
            with open(checkout / "pyproject.toml", "a") as f:
                f.write("\n" + config)
        return Machine(checkout, tmp_path / name / "local-cache")

    return make


def digests(doc: dict) -> dict[str, str]:
    return {t["target"]: t["digest"] for t in doc["targets"]}


def statuses(doc: dict) -> dict[str, str]:
    return {t["target"]: t["status"] for t in doc["targets"]}


def assert_store_consistent(store: Store) -> None:
    """Every blob hashes to its name; every action entry parses and names existing blobs."""
    objs = store.objects()
    blobs = {k.rsplit("/", 1)[1]: v for k, v in objs.items() if k.startswith("cas/sha256/")}
    entries = {k: v for k, v in objs.items() if k.startswith("ac/")}
    assert blobs and entries
    for name, data in blobs.items():
        assert hashlib.sha256(data).hexdigest() == name
    for rel, data in entries.items():
        entry = json.loads(data)
        assert rel == f"ac/{entry['key'][:2]}/{entry['key']}.json"
        for out in entry["outputs"]:
            assert out["digest"] in blobs


STORES = ["file", pytest.param("s3", marks=pytest.mark.servers), pytest.param("gs", marks=pytest.mark.servers),
          pytest.param("az", marks=pytest.mark.servers)]


# -- the CI scenario -----------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_machine_b_rebuilds_nothing_that_machine_a_built(kind, make_store, machine):
    cache, storage = make_store(kind, "cache"), make_store(kind, "bundles")
    a, b = machine("machine-a"), machine("machine-b")
    flags = ("--cache", cache.url, "--storage", storage.url)

    t0 = time.perf_counter()
    doc_a = a.build(*flags, env=cache.env)
    t1 = time.perf_counter()
    doc_b = b.build(*flags, env=cache.env)
    t2 = time.perf_counter()
    TIMES[kind] = {"machine_a": round(t1 - t0, 2), "machine_b": round(t2 - t1, 2)}
    print(f"\n{kind}: machine A {t1 - t0:.2f}s (built), machine B {t2 - t1:.2f}s (from the shared cache)")

    assert set(statuses(doc_a).values()) == {"built"} and len(doc_a["targets"]) == 6
    assert set(statuses(doc_b).values()) == {"cached"}
    assert {t["source"] for t in doc_b["targets"]} == {"shared"}
    assert digests(doc_a) == digests(doc_b)
    assert doc_b["cache"]["shared_hits"] == 6 and doc_b["cache"]["misses"] == 0
    assert doc_b["cache"]["bytes_down"] > 0 and doc_b["cache"]["bytes_up"] == 0
    assert doc_a["cache"]["bytes_up"] > 0

    # the documented layout: cas/sha256/<2>/<hex> and ac/<2>/<key>.json
    objs = cache.objects()
    for t in doc_a["targets"]:
        hex_ = t["digest"].removeprefix("sha256:")
        assert objs[f"cas/sha256/{hex_[:2]}/{hex_}"] == Path(t["path"]).read_bytes()
        assert f"ac/{t['key'][:2]}/{t['key']}.json" in objs
    assert_store_consistent(cache)

    # bundles uploaded once each under their digest; machine B found them there
    bundles = storage.objects()
    assert sorted(bundles) == sorted(f"{d.removeprefix('sha256:')}.tar.gz" for d in digests(doc_a).values())
    for t in doc_b["targets"]:
        hex_ = t["digest"].removeprefix("sha256:")
        assert t["remote"] == f"{storage.url}/{hex_}.tar.gz"
        assert hashlib.sha256(bundles[f"{hex_}.tar.gz"]).hexdigest() == hex_

    stats = b.run("cache", "stats", env=cache.env).out
    assert "shared 6" in stats and f"shared cache {cache.url}: 6 hits, 0 misses" in stats
    assert f"bundle storage {storage.url}: 0 uploaded (0 bytes), 6 already there" in stats
    last = json.loads(b.run("cache", "stats", "--json").out)["last_run"]
    assert last["storage"]["uploads"] == 0 and last["storage"]["present"] == 6


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["s3", "gs", "az"])
def test_unreachable_cache_warns_once_and_builds_locally(kind, machine):
    url = servers.closed_port_url()
    env = {
        "s3": {**servers.S3_ENV, "AWS_ENDPOINT_URL": url},
        "gs": {"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"},
        "az": {"AZURE_STORAGE_CONNECTION_STRING": servers.azurite_connection_string(url)},
    }[kind]
    m = machine("offline", "[tool.hatch.build.targets.flyte.object-store]\ntimeout = 2\n")
    t0 = time.perf_counter()
    doc = m.build("--cache", f"{kind}://flyte-cache/x", env=env)
    assert time.perf_counter() - t0 < 60
    assert set(statuses(doc).values()) == {"built"}
    warnings = [w for w in doc["warnings"] if "shared cache unavailable" in w]
    assert len(warnings) == 1, doc["warnings"]
    assert doc["stderr"].count("shared cache unavailable") == 1
    # and the local cache still works
    again = m.build("--cache", f"{kind}://flyte-cache/x", env=env)
    assert {t["source"] for t in again["targets"]} == {"local"}

    required = m.run("--cache", f"{kind}://flyte-cache/x", "--cache-required", "build", env=env)
    assert required.rc == 1
    assert "shared cache unavailable (cache-required)" in required.err
    assert "Traceback" not in required.err


def azure_keys(endpoint: str) -> str:
    """The `azure` table reaching an Azurite-like endpoint through config keys, not the environment."""
    return (f'azure = {{ endpoint-url = "{endpoint}/{servers.AZURITE_ACCOUNT}", account-name = "{servers.AZURITE_ACCOUNT}", '
            f'account-key = "{servers.AZURITE_KEY}" }}\n')


@pytest.mark.servers
@pytest.mark.parametrize("kind", ["s3", "az"])
def test_a_cache_that_times_out_costs_one_warning(kind, machine):
    silent = servers.SilentServer()  # accepts connections, never answers
    try:
        # the endpoint through the explicit config keys, not the environment
        keys = f's3 = {{ endpoint-url = "{silent.url}" }}\n' if kind == "s3" else azure_keys(silent.url)
        m = machine("silent", f'[tool.hatch.build.targets.flyte.object-store]\ntimeout = 1\n{keys}')
        t0 = time.perf_counter()
        doc = m.build("--cache", f"{kind}://flyte-cache/x", env=servers.S3_ENV)
        elapsed = time.perf_counter() - t0
    finally:
        silent.close()
    assert elapsed < 45
    assert set(statuses(doc).values()) == {"built"}
    assert len([w for w in doc["warnings"] if "shared cache unavailable" in w]) == 1


@pytest.mark.parametrize("kind", STORES)
def test_corrupt_shared_blob_is_refused_rebuilt_and_replaced(kind, make_store, machine):
    cache = make_store(kind)
    doc_a = machine("a").build("--cache", cache.url, env=cache.env)
    victim = next(t for t in doc_a["targets"] if t["target"] == "bundle:preprocessing")
    hex_ = victim["digest"].removeprefix("sha256:")
    rel = f"cas/sha256/{hex_[:2]}/{hex_}"
    good = cache.objects(rel)[rel]
    fs = cache.fs()
    fs.pipe_file(cache.path(rel), b"\0" * len(good))  # same size, wrong bytes: bit rot

    doc_b = machine("b").build("--cache", cache.url, env=cache.env)
    st = statuses(doc_b)
    assert st.pop("bundle:preprocessing") == "built"
    assert set(st.values()) == {"cached"}
    assert digests(doc_b) == digests(doc_a)
    assert doc_b["cache"]["corrupt"] == 1
    assert any("refused" in w and hex_ in w for w in doc_b["warnings"])
    assert cache.objects(rel)[rel] == good  # replaced with the rebuilt bytes
    assert_store_consistent(cache)

    doc_c = machine("c").build("--cache", cache.url, env=cache.env)
    assert set(statuses(doc_c).values()) == {"cached"} and doc_c["cache"]["corrupt"] == 0


@pytest.mark.parametrize("kind", STORES)
def test_two_checkouts_building_at_once_share_one_cache(kind, make_store, machine):
    cache, storage = make_store(kind, "cache"), make_store(kind, "bundles")
    a, b = machine("a"), machine("b")
    args = ("--cache", cache.url, "--storage", storage.url, "build", "--json")
    procs = [popen(*args, cwd=m.checkout, cache=m.cache, env=cache.env) for m in (a, b)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    docs = [json.loads(out) for out, _ in results]
    assert digests(docs[0]) == digests(docs[1])
    assert all(not d["warnings"] for d in docs), [d["warnings"] for d in docs]
    assert_store_consistent(cache)
    assert len(storage.objects()) == 6


def test_half_written_objects_are_never_read(make_store, machine):
    """A writer killed mid-upload leaves a temporary name (file://) -- never read --
    and a blob truncated under its real name is refused."""
    cache = make_store("file")
    doc_a = machine("a").build("--cache", cache.url)
    by_target = {t["target"]: t for t in doc_a["targets"]}
    root = Path(cache.path())
    # 1. a killed writer: entry and blob gone, a partial temp file beside the blob's name
    t = by_target["bundle:inference"]
    hex_ = t["digest"].removeprefix("sha256:")
    blob = root / "cas/sha256" / hex_[:2] / hex_
    partial = blob.read_bytes()[:100]
    blob.unlink()
    (root / "ac" / t["key"][:2] / f"{t['key']}.json").unlink()
    (blob.parent / ".tmp-killed").write_bytes(partial)
    # 2. a non-atomic writer: a truncated blob under the real name, its entry present
    t2 = by_target["bundle:reporting"]
    hex2 = t2["digest"].removeprefix("sha256:")
    blob2 = root / "cas/sha256" / hex2[:2] / hex2
    blob2.write_bytes(blob2.read_bytes()[:100])

    doc_b = machine("b").build("--cache", cache.url)
    st = statuses(doc_b)
    assert st["bundle:inference"] == "built" and st["bundle:reporting"] == "built"
    assert digests(doc_b) == digests(doc_a)
    assert doc_b["cache"]["corrupt"] == 1  # the truncated one; the temp file was never looked at
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == hex_
    assert hashlib.sha256(blob2.read_bytes()).hexdigest() == hex2


@pytest.mark.servers
def test_an_unfinished_s3_upload_is_invisible(make_store, machine):
    """On S3 an upload becomes an object only when it completes: a started,
    never-finished multipart upload under a blob's key is a miss, not a read."""
    import boto3

    cache = make_store("s3")
    doc_a = machine("a").build("--cache", cache.url, env=cache.env)
    t = next(t for t in doc_a["targets"] if t["target"] == "bundle:inference")
    hex_ = t["digest"].removeprefix("sha256:")
    fs = cache.fs()
    fs.rm(cache.path(f"cas/sha256/{hex_[:2]}/{hex_}"))
    fs.rm(cache.path(f"ac/{t['key'][:2]}/{t['key']}.json"))
    s3 = boto3.client("s3", endpoint_url=cache.env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    key = cache.path(f"cas/sha256/{hex_[:2]}/{hex_}").split("/", 1)[1]
    mpu = s3.create_multipart_upload(Bucket="flyte-cache", Key=key)
    s3.upload_part(Bucket="flyte-cache", Key=key, UploadId=mpu["UploadId"], PartNumber=1, Body=b"partial")

    doc_b = machine("b").build("--cache", cache.url, env=cache.env)
    assert statuses(doc_b)["bundle:inference"] == "built"
    assert doc_b["cache"]["corrupt"] == 0
    assert digests(doc_b) == digests(doc_a)
    assert_store_consistent(cache)


# -- input errors and the Python API --------------------------------------------------------


@pytest.mark.parametrize(
    "config, message",
    [
        ("[tool.hatch.build.targets.flyte.object-store]\ns3 = { endpoint = 'x' }\n",
         "Unknown field tool.hatch.build.targets.flyte.object-store.s3.endpoint in "),
        ("[tool.hatch.build.targets.flyte.object-store]\ntimeout = -1\n",
         "Field tool.hatch.build.targets.flyte.object-store.timeout must be a positive, finite number of seconds"),
        ("[tool.hatch.build.targets.flyte.object-store]\nazure = { account = 'x' }\n",
         "pyproject.toml; valid fields: account-key, account-name,"),
        ("[tool.hatch.build.targets.flyte.object-store]\nhdfs = {}\n",
         "object-store.hdfs in "),
    ],
)
def test_bad_object_store_config_is_a_user_error(config, message, machine):
    proc = machine("bad", config).run("build")
    assert proc.rc == 2
    assert message in proc.err
    assert "Traceback" not in proc.err


@pytest.mark.servers
def test_azure_through_config_keys_and_an_abfs_url(machine):
    conn = servers.azurite_server()
    require(conn is not None, "Azurite, the Azure Storage emulator (npm install -g azurite)")
    servers.make_azure_container(conn, "flyte-keys")
    endpoint = conn.split("BlobEndpoint=", 1)[1].rstrip(";").rsplit("/", 1)[0]
    m = machine("keys", f"[tool.hatch.build.targets.flyte.object-store]\n{azure_keys(endpoint)}")
    env = {"AZURE_STORAGE_CONNECTION_STRING": ""}  # nothing from the environment
    doc = m.build("--cache", "abfs://flyte-keys/ci", "--storage", "abfs://flyte-keys/bundles", env=env)
    assert set(statuses(doc).values()) == {"built"} and not doc["warnings"]
    store = Store("az", "az://flyte-keys", {"AZURE_STORAGE_CONNECTION_STRING": conn})
    objs = store.objects()
    for t in doc["targets"]:
        hex_ = t["digest"].removeprefix("sha256:")
        assert hashlib.sha256(objs[f"ci/cas/sha256/{hex_[:2]}/{hex_}"]).hexdigest() == hex_
        assert objs[f"bundles/{hex_}.tar.gz"] == objs[f"ci/cas/sha256/{hex_[:2]}/{hex_}"]
        assert t["remote"] == f"abfs://flyte-keys/bundles/{hex_}.tar.gz"


@pytest.mark.parametrize("url, message", [("ftp://host/x", "unsupported scheme 'ftp'"), ("s3://", "no bucket"),
                                          ("az://", "no container")])
def test_bad_cache_url_is_a_user_error(url, message, machine):
    proc = machine("bad").run("--cache", url, "build")
    assert proc.rc == 2 and message in proc.err


@pytest.mark.parametrize("kind", STORES)
def test_upload_bundle_uploads_once(kind, make_store, tmp_path):
    from flyte_build.engine.rulesets import builtin

    upload, upload_bundle = builtin("bundle.upload").upload, builtin("bundle.upload").upload_bundle

    storage = make_store(kind, "bundles")
    old = {k: os.environ.get(k) for k in storage.env}
    os.environ.update(storage.env)
    try:
        data = b"a bundle's bytes"
        src = tmp_path / "b.tar.gz"
        src.write_bytes(data)
        hex_ = hashlib.sha256(data).hexdigest()
        assert upload_bundle(storage.url, src, hex_) == f"{storage.url}/{hex_}.tar.gz"
        assert upload(storage.url, src, hex_).uploaded is False
        assert storage.objects() == {f"{hex_}.tar.gz": data}
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
