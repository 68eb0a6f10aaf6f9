"""The shared cache's documents, sized by someone hostile (issue 24, holes 6 and 7).

Hole 6: a ~200 KB stored document (a discovery result, a build manifest)
inflating to 60 MiB of `[{},{},...]` cost GBs of memory and ended in
`internal error: MemoryError`, keys or not. Each is now refused from its bytes
(too many JSON values, too deep, a string too long), with one warning naming
why, in bounded memory; a reader holding verify keys refuses an unsigned one
before parsing it at all.

Hole 7: a build manifest made readers download every blob it named. Now only
the blobs of the targets being built are fetched ahead, at most once per
target and in bounded total, and every byte fetched counts in `bytes_down`.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import pytest

from flyte_build.hashing import sha256_hex
from flyte_build.stores import signing
from tests.support import servers
from tests.support.cli import flyte_build
from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("shared documents (size, prefetch)")

PRIVATE, PUBLIC = signing.keygen()
RSS_BOUND_KB = 400 << 10  # a clean reader peaks near 160 MiB; the bombs below cost GBs unbounded
# 60 MiB of empty tables: under every inflate cap, ~20 million values
BOMB_JSON = b'{"format":1,"pad":[' + b"{}," * (20 << 20) + b"0]}"
BOMB = zlib.compress(BOMB_JSON, 9)


def _signed(payload: bytes) -> bytes:
    """`payload` (canonical JSON of an object) stored as a writer holding the
    real signing key stores a discovery result: the bounds hold even then."""
    from flyte_build.hashing import canonical_json
    from flyte_build.stores.shared_discovery import DOMAIN

    sig = signing.load_signer(environ={signing.SIGNING_KEY_ENV: PRIVATE}).sign_document(DOMAIN, payload)
    return zlib.compress(payload[:-1] + b',"sig":' + canonical_json(sig) + b"}", 9)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(repo, unsigned store, signed store, the writer's digests); each store
    holds the discovery result and the build manifest of a `build`."""
    base = tmp_path_factory.mktemp("documents")
    root = make_repo(base / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a"), "pkg/b.py": env_module("b")})
    stores = []
    for name, env in (("plain", {}), ("signed", {signing.SIGNING_KEY_ENV: PRIVATE})):
        store = base / name
        writer = Cli(root, base / f"{name}-cache", env={"CI": "", **env})
        run = writer.build("--cache", f"file://{store}", "--cache-write")
        run.assert_ok()
        stores.append(store)
    return root, stores[0], stores[1], run.digests()


def _copy(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(store, copy, symlinks=True)
    return copy


def _measured_build(root: Path, cache: Path, store: Path, *args: str, env: dict | None = None):
    run = flyte_build("build", "--json", "--cache", f"file://{store}", *args, cwd=root, cache=cache,
                      env={"CI": "", **(env or {})}, wrapper=("/usr/bin/time", "-f", "maxrss_kb=%M"))
    rss_kb = int(run.err.rsplit("maxrss_kb=", 1)[1].split()[0])
    return run, rss_kb


@pytest.mark.parametrize("kind", ["discovery", "manifest"])
def test_a_document_bomb_is_refused_in_bounded_memory(published, tmp_path, kind):
    """A manifest (read with or without keys) and a discovery result (read only
    signed and verified: this one is signed with the real key) of 20 million
    values: refused from their bytes."""
    root, plain, signed, digests = published
    store = _copy(signed if kind == "discovery" else plain, tmp_path)
    docs = sorted((store / kind).rglob("*.json.gz"))
    assert docs, f"the writer published no {kind} document"
    for d in docs:
        d.write_bytes(_signed(BOMB_JSON) if kind == "discovery" else BOMB)
    env = {signing.VERIFY_KEYS_ENV: PUBLIC} if kind == "discovery" else {}
    run, rss_kb = _measured_build(root, tmp_path / "reader", store, env=env)
    run.assert_ok()
    assert "internal error" not in run.err and "MemoryError" not in run.err
    assert rss_kb < RSS_BOUND_KB, f"peak RSS {rss_kb} KiB reading a {len(BOMB)} B document"
    doc = run.json()
    assert doc["cache"]["corrupt"] >= 1
    refusals = [w for w in doc["warnings"] if "refused" in w and "over 2000000 JSON values" in w]
    assert len(refusals) == 1 and kind in refusals[0], doc["warnings"]
    assert run.digests() == digests


@pytest.mark.parametrize("shape,why", [
    (b'{"format":1,"pad":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper than 64"),
    (b'{"format":1,"pad":"' + b"x" * (8 << 20) + b'"}', "a string over 1048576 characters"),
    (b'{"format":1,"pad":[' + b"1," * (8 << 20) + b"0]}", "over 2000000 JSON values"),
], ids=["5000 deep", "an 8 MiB string", "8 million numbers"])
def test_odd_shaped_discovery_documents_are_refused(published, tmp_path, shape, why):
    root, _, signed, digests = published
    store = _copy(signed, tmp_path)
    for d in (store / "discovery").rglob("*.json.gz"):
        d.write_bytes(_signed(shape))
    run, rss_kb = _measured_build(root, tmp_path / "reader", store, env={signing.VERIFY_KEYS_ENV: PUBLIC})
    run.assert_ok()
    assert rss_kb < RSS_BOUND_KB
    assert any("refused" in w and why in w for w in run.json()["warnings"]), run.json()["warnings"]
    assert run.digests() == digests


def test_with_keys_an_unsigned_bomb_is_refused_before_it_is_parsed(published, tmp_path):
    """A reader holding verify keys: the signature is checked over the stored
    bytes, so an unsigned document is refused as unsigned (never parsed); a
    signed one is still taken (discovery comes from the shared cache)."""
    root, _, signed, digests = published
    env = {signing.VERIFY_KEYS_ENV: PUBLIC}
    store = _copy(signed, tmp_path)
    good, rss_kb = _measured_build(root, tmp_path / "trusting", store, env=env)
    good.assert_ok()
    assert good.json()["discovery"]["how"] == "shared"
    for d in (store / "discovery").rglob("*.json.gz"):
        d.write_bytes(BOMB)
    run, rss_kb = _measured_build(root, tmp_path / "reader", store, env=env)
    run.assert_ok()
    assert rss_kb < RSS_BOUND_KB
    warnings = run.json()["warnings"]
    assert any("refused" in w and "discovery entry: unsigned entry" in w for w in warnings), warnings
    assert not any("JSON values" in w for w in warnings), "the unsigned document was parsed"
    assert run.json()["discovery"]["how"] != "shared"
    assert run.digests() == digests


def test_s3_document_bomb_is_refused_in_bounded_memory(published, tmp_path):
    import boto3

    root, plain, _, digests = published
    endpoint = servers.s3_bucket("documents")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_s3_keys())
    prefix = f"d-{os.getpid()}-{tmp_path.name}"
    for p in plain.rglob("*"):
        if p.is_file():
            body = BOMB if p.parts[len(plain.parts)] == "manifest" else p.read_bytes()
            s3.put_object(Bucket="documents", Key=f"{prefix}/{p.relative_to(plain).as_posix()}", Body=body)
    env = {**servers.S3_ENV, "AWS_ENDPOINT_URL": endpoint, "CI": ""}
    run = flyte_build("build", "--json", "--cache", f"s3://documents/{prefix}", cwd=root, cache=tmp_path / "reader",
                      env=env, wrapper=("/usr/bin/time", "-f", "maxrss_kb=%M"))
    run.assert_ok()
    assert int(run.err.rsplit("maxrss_kb=", 1)[1].split()[0]) < RSS_BOUND_KB
    assert sum("over 2000000 JSON values" in w for w in run.json()["warnings"]) == 1, run.json()["warnings"]
    assert run.digests() == digests


def _s3_keys() -> dict:
    return {"aws_access_key_id": servers.S3_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": servers.S3_ENV["AWS_SECRET_ACCESS_KEY"]}


# -- hole 7: what a manifest makes a reader download --------------------------------


def _manifest(store: Path) -> Path:
    (m,) = (store / "manifest").rglob("*.json.gz")
    return m


def _plant_blob(store: Path, size: int, seed: bytes) -> tuple[str, int]:
    data = (seed * (size // len(seed) + 1))[:size]
    hex_ = sha256_hex(data)
    p = store / "cas" / "sha256" / hex_[:2] / hex_
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return hex_, size


def _add_entries(manifest: Path, entries: list[tuple[str, tuple[str, int]]]) -> None:
    doc = json.loads(zlib.decompress(manifest.read_bytes()))
    for i, (target, (hex_, size)) in enumerate(entries):
        key = sha256_hex(f"forged {i}".encode())
        doc["entries"][key] = {"format": 1, "key": key, "target": target, "meta": {},
                               "outputs": [{"name": "bundle.tar.gz", "digest": hex_, "size": size}]}
    manifest.write_bytes(zlib.compress(json.dumps(doc).encode()))


def _downloaded(cache: Path) -> int:
    return sum(p.stat().st_size for p in (cache / "cas").rglob("*") if p.is_file())


@pytest.mark.parametrize("target", ["bundle:x{}", "bundle:a"], ids=["targets not built", "a second entry for a target"])
def test_a_manifest_cannot_make_readers_download_what_they_do_not_build(published, tmp_path, target):
    """A build of two small bundles against a manifest naming 12 more 4 MiB
    blobs: the reader downloads its own bundles only, and counts every byte."""
    root, plain, _, digests = published
    store = _copy(plain, tmp_path)
    manifest = _manifest(store)
    _add_entries(manifest, [(target.format(i), _plant_blob(store, 4 << 20, b"%d" % i)) for i in range(12)])
    cache = tmp_path / "reader"
    run = Cli(root, cache, env={"CI": ""}).build("--cache", f"file://{store}")
    run.assert_ok()
    doc = run.json()
    assert {t["status"] for t in doc["targets"]} == {"cached"}
    assert run.digests() == digests
    got = _downloaded(cache)
    assert got < 1 << 20, f"{got} bytes downloaded for a two-bundle build"
    assert doc["cache"]["bytes_down"] >= got, "bytes fetched without being counted"
    if target == "bundle:a":
        assert any("refused" in w and "two entries for bundle:a" in w for w in doc["warnings"]), doc["warnings"]


def test_a_blob_fetched_ahead_and_refused_is_still_counted(published, tmp_path):
    """The manifest's entry for a built target names a 4 MiB object that does
    not hash to its name: it is downloaded, refused, rebuilt from `ac/`, and
    the bytes it cost are in `bytes_down`."""
    root, plain, _, digests = published
    store = _copy(plain, tmp_path)
    manifest = _manifest(store)
    doc = json.loads(zlib.decompress(manifest.read_bytes()))
    fake = "f" * 64
    (store / "cas" / "sha256" / "ff").mkdir(parents=True, exist_ok=True)
    (store / "cas" / "sha256" / "ff" / fake).write_bytes(b"x" * (4 << 20))
    for entry in doc["entries"].values():
        if entry["target"] == "bundle:a":
            entry["outputs"][0].update(digest=fake, size=4 << 20)
    manifest.write_bytes(zlib.compress(json.dumps(doc).encode()))
    cache = tmp_path / "reader"
    run = Cli(root, cache, env={"CI": ""}).build("--cache", f"file://{store}")
    run.assert_ok()
    assert run.digests() == digests
    assert _downloaded(cache) < 1 << 20
    assert run.json()["cache"]["bytes_down"] >= 4 << 20, "bytes fetched and refused were not counted"


@pytest.mark.timeout(60)
def test_bounds_hold_at_every_depth_for_values_and_keys():
    """The shape bounds read each value and key once, whatever its depth: 64
    levels pass and 65 do not (the parser's own recursion limit is far above),
    and an over-long string is found as a value or as a key, at the top or deep."""
    from flyte_build.stores.documents import Bounds, parse

    bounds = Bounds(max_bytes=1 << 20, max_string=8)
    assert parse(b"[" * 64 + b"]" * 64, bounds) is not None
    assert parse(b'{"k":' * 63 + b'"12345678"' + b"}" * 63, bounds) is not None
    with pytest.raises(ValueError, match="nested deeper than 64"):
        parse(b"[" * 65 + b"]" * 65, bounds)
    with pytest.raises(ValueError, match="nested deeper than 64"):
        parse(b'{"k":' * 64 + b"[]" + b"}" * 64, bounds)
    for doc in (b'"123456789"', b'[1,{"a":["123456789"]}]', b'{"123456789":1}', b'{"a":[{"b":{"123456789":null}}]}',
                b'{"k":' * 40 + b'{"123456789":0}' + b"}" * 40):
        with pytest.raises(ValueError, match="a string over 8 characters"):
            parse(doc, bounds)
