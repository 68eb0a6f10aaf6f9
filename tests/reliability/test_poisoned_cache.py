"""A shared cache written by someone hostile: every attack of issue 15, rerun.

A writer builds a small repository once and publishes to a file:// store;
each test copies that store, poisons it the way an attacker with write access
to the store could (path names in outputs and digests, odd-shaped entries,
remapped keys, oversized objects, special files), then a second machine with
an empty local cache builds against it. Each attack must be refused: the
build succeeds with a clean rebuild (same digests as the writer's), the
refusal is reported, nothing outside the cache or `--out` is written or
deleted, and the bad entry is replaced in the store.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import pytest

from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("poisoned shared cache")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(repo, the writer's store, the writer's build --json doc)."""
    base = tmp_path_factory.mktemp("poison")
    root = make_repo(base / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a")})
    store = base / "store"
    writer = Cli(root, base / "writer-cache")
    run = writer.build("--cache", f"file://{store}", "--cache-write")
    run.assert_ok()
    return root, store, run.json()


def _reader(published, tmp_path, *flags: str, env: dict | None = None):
    """Copy the published store; return (a reader Cli with an empty cache, the store copy, build flags)."""
    root, store, _ = published
    copy = tmp_path / "store"
    shutil.copytree(store, copy, symlinks=True)
    cli = Cli(root, tmp_path / "reader-cache", env=env or {})
    return cli, copy, ("--cache", f"file://{copy}", *flags)


def _entry_path(store: Path, target: str) -> Path:
    for p in (store / "ac").rglob("*.json"):
        if json.loads(p.read_bytes()).get("target") == target:
            return p
    raise AssertionError(f"no entry for {target} in {store}")


def _rewrite(store: Path, target: str, change) -> dict:
    """Poison the target's entry wherever the store carries it: its `ac/` file and
    every build manifest (an attacker with write access rewrites both)."""
    p = _entry_path(store, target)
    doc = json.loads(p.read_bytes())
    change(doc)
    p.write_text(json.dumps(doc))
    manifests = list((store / "manifest").rglob("*.json.gz"))
    assert manifests, "the writer published no build manifest: the attack would miss that path"
    for m in manifests:
        carried = json.loads(zlib.decompress(m.read_bytes()))
        for entry in carried["entries"].values():
            if entry.get("target") == target:
                change(entry)
        m.write_bytes(zlib.compress(json.dumps(carried).encode()))
    return doc


def _assert_refused_and_rebuilt(run, published, why: str = "") -> dict:
    run.assert_ok()
    doc = run.json()
    bundle = next(t for t in doc["targets"] if t["target"] == "bundle:a")
    assert bundle["status"] == "built", "a poisoned entry was served"
    assert bundle["digest"] == next(t["digest"] for t in published[2]["targets"] if t["target"] == "bundle:a")
    assert doc["cache"]["corrupt"] >= 1
    refusals = [w for w in doc["warnings"] if "refused" in w]
    assert refusals and why in " ".join(refusals), doc["warnings"]
    return doc


def test_output_name_leading_out_of_out_dir_is_refused(published, tmp_path):
    """Critical 1: an output named `x./../../victim` would be written outside --out."""
    cli, store, flags = _reader(published, tmp_path)
    victim = tmp_path / "victim"
    _rewrite(store, "bundle:a", lambda d: d["outputs"][0].update(name=f"x./../../../../../../../{victim}"))
    out = tmp_path / "out"
    run = cli.build(*flags, "--out", str(out))
    _assert_refused_and_rebuilt(run, published, "plain file name")
    assert not victim.exists()
    assert all(p.resolve().is_relative_to(out) for p in out.rglob("*"))
    # the rebuild's publish replaced the poisoned build manifest as well as the entry
    for m in (store / "manifest").rglob("*.json.gz"):
        assert str(victim) not in zlib.decompress(m.read_bytes()).decode()
    # the next reader finds the entry repaired by the rebuild's publish
    again = Cli(cli.cwd, tmp_path / "third-cache").build(*flags)
    again.assert_ok()
    assert {t["status"] for t in again.json()["targets"]} == {"cached"}


def test_digest_naming_a_path_is_refused_and_nothing_deleted(published, tmp_path):
    """Critical 2: a digest of `../../victim` (right size) was "verified", failed, and unlinked."""
    cli, store, flags = _reader(published, tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    rel = os.path.relpath(victim, cli.cache_dir / "cas" / "sha256" / "xx")
    _rewrite(store, "bundle:a", lambda d: d["outputs"][0].update(digest=rel, size=8))
    run = cli.build(*flags)
    _assert_refused_and_rebuilt(run, published, "64 lowercase hex")
    assert victim.read_bytes() == b"precious"
    assert not (cli.cache_dir.parent / "cas").exists()


@pytest.mark.parametrize(
    "name,change,why",
    [
        ("meta a list", lambda d: d.update(meta=[1, 2]), "meta is not a table"),
        ("size -1", lambda d: d["outputs"][0].update(size=-1), "size"),
        ("size a string", lambda d: d["outputs"][0].update(size="12"), "size"),
        ("size over the cap", lambda d: d["outputs"][0].update(size=1 << 50), "size"),
        ("deep nesting", lambda d: d["meta"].update(x=[[[[[[[[1]]]]]]]]), "nested deeper"),
        ("no outputs", lambda d: d.update(outputs=[]), "not what rule bundle makes"),
        ("uppercase digest", lambda d: d["outputs"][0].update(digest=d["outputs"][0]["digest"].upper()), "64 lowercase hex"),
        ("meta digest not a digest", lambda d: d["meta"].update(digest="../../etc"), "meta.digest"),
        ("unknown field", lambda d: d.update(extra=1), "unknown field"),
        ("another kind's entry", lambda d: d.update(target="image:a"), "not a bundle target"),
    ],
)
def test_odd_shaped_entries_are_refused_and_replaced(published, tmp_path, name, change, why):
    """Medium: odd shapes failed a target on every consumer forever and were never repaired."""
    cli, store, flags = _reader(published, tmp_path)
    _rewrite(store, "bundle:a", change)
    run = cli.build(*flags)
    doc = _assert_refused_and_rebuilt(run, published, why)
    assert sum("refused" in w for w in doc["warnings"]) == 1, "reported more than once"
    # replaced in the store: the entry parses again and the next reader hits
    assert json.loads(_entry_path(store, "bundle:a").read_bytes())["outputs"][0]["size"] > 0
    again = Cli(cli.cwd, tmp_path / "third-cache").build(*flags)
    again.assert_ok()
    assert {t["status"] for t in again.json()["targets"]} == {"cached"}


def test_digest_naming_a_directory_in_local_cache_is_refused(published, tmp_path):
    """A local entry whose blob is a directory (or names one) is a miss, rebuilt, not an error forever."""
    cli, store, flags = _reader(published, tmp_path)
    cli.build(*flags).assert_ok()
    entry = _entry_path(cli.cache_dir, "bundle:a")
    digest = json.loads(entry.read_bytes())["outputs"][0]["digest"]
    blob = cli.cache_dir / "cas" / "sha256" / digest[:2] / digest
    blob.unlink()
    blob.mkdir()
    run = cli.build()
    run.assert_ok()
    assert next(t for t in run.json()["targets"] if t["target"] == "bundle:a")["status"] == "built"
    assert cli.verify().rc == 0


def test_oversized_entry_is_refused(published, tmp_path):
    cli, store, flags = _reader(published, tmp_path)
    _rewrite(store, "bundle:a", lambda d: d["meta"].update(pad=["x" * 4000] * 300))  # ~1.2 MB
    _assert_refused_and_rebuilt(cli.build(*flags), published, "over")


def test_blob_larger_than_declared_is_not_downloaded(published, tmp_path):
    """A 3 GB object behind a small entry: refused before a byte is copied (a sparse file here)."""
    cli, store, flags = _reader(published, tmp_path)
    doc = json.loads(_entry_path(store, "bundle:a").read_bytes())
    digest = doc["outputs"][0]["digest"]
    blob = store / "cas" / "sha256" / digest[:2] / digest
    with open(blob, "r+b") as f:
        f.truncate(3 << 30)
    run = cli.build(*flags)
    _assert_refused_and_rebuilt(run, published, "the entry says")
    assert run.json()["cache"]["bytes_down"] < 1 << 20
    assert sum(p.stat().st_size for p in cli.cache_dir.rglob("*") if p.is_file()) < 64 << 20


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "fifo", "symlink to a real blob"])
def test_special_files_in_a_file_store_are_refused(published, tmp_path, kind):
    """A file:// blob that is a symlink to /dev/zero wrote 9 GB; a FIFO hung the build."""
    cli, store, flags = _reader(published, tmp_path)
    doc = json.loads(_entry_path(store, "bundle:a").read_bytes())
    digest = doc["outputs"][0]["digest"]
    blob = store / "cas" / "sha256" / digest[:2] / digest
    real = tmp_path / "real-blob"
    shutil.move(blob, real)
    if kind == "fifo":
        os.mkfifo(blob)
    else:
        blob.symlink_to("/dev/zero" if "zero" in kind else real)
    run = cli.build(*flags)
    _assert_refused_and_rebuilt(run, published, "")
    assert sum(p.stat().st_size for p in cli.cache_dir.rglob("*") if p.is_file()) < 64 << 20


def test_entry_that_is_a_fifo_is_refused(published, tmp_path):
    cli, store, flags = _reader(published, tmp_path)
    shutil.rmtree(store / "manifest")  # the attacker deletes the manifest, so ac/ is read
    p = _entry_path(store, "bundle:a")
    p.unlink()
    os.mkfifo(p)
    _assert_refused_and_rebuilt(cli.build(*flags), published, "not a regular file")


# -- the same attacks on a real S3 API (moto's server) ---------------------------


@pytest.fixture(scope="module")
def s3_published(published):
    """(an S3 client, moto's endpoint) with a bucket the readers' stores go in."""
    import boto3

    from tests.support import servers

    endpoint = servers.s3_bucket("poisoned")
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    return s3, endpoint


def _s3_reader(published, s3_published, tmp_path):
    import uuid

    s3, endpoint = s3_published
    prefix = f"p-{uuid.uuid4().hex[:8]}"
    _, store, _ = published
    for p in store.rglob("*"):
        if p.is_file() and not p.is_symlink():
            s3.put_object(Bucket="poisoned", Key=f"{prefix}/{p.relative_to(store).as_posix()}", Body=p.read_bytes())
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    cli = Cli(published[0], tmp_path / "reader-cache", env=env)
    return cli, prefix, ("--cache", f"s3://poisoned/{prefix}")


def _s3_entry_key(s3, prefix: str, target: str) -> str:
    for obj in s3.list_objects_v2(Bucket="poisoned", Prefix=f"{prefix}/ac/")["Contents"]:
        if json.loads(s3.get_object(Bucket="poisoned", Key=obj["Key"])["Body"].read()).get("target") == target:
            return obj["Key"]
    raise AssertionError(target)


def test_s3_entry_with_a_path_name_and_digest_is_refused(published, s3_published, tmp_path):
    s3, _ = s3_published
    cli, prefix, flags = _s3_reader(published, s3_published, tmp_path)
    for obj in s3.list_objects_v2(Bucket="poisoned", Prefix=f"{prefix}/manifest/")["Contents"]:
        s3.delete_object(Bucket="poisoned", Key=obj["Key"])  # the attacker deletes it, so ac/ is read
    victim = tmp_path / "victim"
    key = _s3_entry_key(s3, prefix, "bundle:a")
    doc = json.loads(s3.get_object(Bucket="poisoned", Key=key)["Body"].read())
    doc["outputs"][0]["name"] = f"x./../../../../../../../{victim}"
    s3.put_object(Bucket="poisoned", Key=key, Body=json.dumps(doc).encode())
    run = cli.build(*flags, "--out", str(tmp_path / "out"))
    _assert_refused_and_rebuilt(run, published, "plain file name")
    assert not victim.exists()
    doc["outputs"][0]["name"], doc["outputs"][0]["digest"] = "bundle.tar.gz", "../../../victim"
    s3.put_object(Bucket="poisoned", Key=key, Body=json.dumps(doc).encode())
    for obj in s3.list_objects_v2(Bucket="poisoned", Prefix=f"{prefix}/manifest/")["Contents"]:
        s3.delete_object(Bucket="poisoned", Key=obj["Key"])  # the rebuild published a good one
    again = Cli(cli.cwd, tmp_path / "third-cache", env=cli.env).build(*flags)
    _assert_refused_and_rebuilt(again, published, "64 lowercase hex")


def test_s3_blob_larger_than_declared_is_not_downloaded(published, s3_published, tmp_path):
    """A 64 MiB object behind a small entry: refused on its size, not fetched."""
    s3, _ = s3_published
    cli, prefix, flags = _s3_reader(published, s3_published, tmp_path)
    doc = json.loads(s3.get_object(Bucket="poisoned", Key=_s3_entry_key(s3, prefix, "bundle:a"))["Body"].read())
    digest = doc["outputs"][0]["digest"]
    s3.put_object(Bucket="poisoned", Key=f"{prefix}/cas/sha256/{digest[:2]}/{digest}", Body=b"\0" * (64 << 20))
    run = cli.build(*flags)
    doc = _assert_refused_and_rebuilt(run, published, "the entry says")
    assert doc["cache"]["bytes_down"] < 1 << 20
