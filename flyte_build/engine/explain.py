"""`explain`: why a target would rebuild, from what the engine remembers of its last run.

The engine keeps, per checkout and target, the document its last action key was
made of (`remember_inputs`), and for a rule with a `deliver` step (an image's
push) the digest that step last gave the result (`remember_delivered`): the
result's dependents were keyed by that digest, and explain -- offline, it runs
no step -- keys them the same way. Both are reports only: no build reads them.
"""

from __future__ import annotations

from .. import atomic
from ..hashing import canonical_json, key_of


def state_dir(ctx) -> str:
    return f"state/{key_of(['root', str(ctx.root)])[:24]}"


def _record_name(addr: str) -> str:
    return f"{addr.replace(':', '--')}.json"


def _write_if_changed(path, record: bytes) -> None:
    try:
        # an unchanged target leaves the record as it was: comparing its bytes is far
        # cheaper than an fsynced atomic rewrite per target (0.3 s of a 50-env no-op)
        # or than decoding it (50 documents of 20-70 KB at 5,000 files)
        try:
            if path.read_bytes() == record:
                return
        except FileNotFoundError:
            pass
        atomic.write_bytes(path, record, durable=False)  # as store.write_json: explain parses what it reads
    except OSError:
        pass


def remember_inputs(ctx, addr: str, key: str, encoded_doc: bytes) -> None:
    """Keep the key's document, as `store.write_json` would write {"key": key, "doc": doc}
    (canonical JSON: "doc" sorts first)."""
    path = ctx.store.root / state_dir(ctx) / "last" / _record_name(addr)
    _write_if_changed(path, b'{"doc":' + encoded_doc + b',"key":' + canonical_json(key) + b"}")


def remember_delivered(ctx, addr: str, key: str, digest: str | None) -> None:
    """Keep the digest the rule's `deliver` step gave the result of action `key`."""
    path = ctx.store.root / state_dir(ctx) / "delivered" / _record_name(addr)
    _write_if_changed(path, canonical_json({"digest": digest, "key": key}))


def _delivered_digest(ctx, addr: str, key: str, digest: str | None) -> str | None:
    last = ctx.store.read_json(f"{state_dir(ctx)}/delivered/{_record_name(addr)}")
    if isinstance(last, dict) and last.get("key") == key and isinstance(last.get("digest"), str):
        return last["digest"]
    return digest


def _doc_shaped(doc: dict) -> bool:
    """A remembered key document as `key_document` writes it (else: no record)."""
    files = doc.get("files", [])
    return (isinstance(files, list) and all(isinstance(f, list) and f and isinstance(f[0], str) for f in files)
            and isinstance(doc.get("params", {}), dict) and isinstance(doc.get("deps", {}), dict))


def report(engine, addr: str) -> dict:
    """Why `addr` would rebuild: the inputs that differ from its last build."""
    deps_digest: dict[str, str | None] = {}
    deps_report = []
    for d in engine.graph.edges.get(addr, ()):
        sub = engine.explain(d)
        deps_digest[d] = sub.get("digest")
        if sub["would_rebuild"]:
            deps_report.append(d)
    t = engine.graph.targets[addr]
    doc, _, _ = engine.key_document(t, deps_digest)
    key = key_of(doc)
    ctx = engine.ctx
    entry = ctx.store.get_action(key)
    digest = None
    if entry is not None:
        digest = engine._result(t, "cached", entry, key, 0, "local").digest
        if engine.graph.rules[t.kind].deliver is not None:
            digest = _delivered_digest(ctx, addr, key, digest)
    last = ctx.store.read_json(f"{state_dir(ctx)}/last/{_record_name(addr)}")
    out = {"target": addr, "key": key, "would_rebuild": entry is None, "digest": digest, "dependencies_rebuilding": deps_report}
    if not (isinstance(last, dict) and isinstance(last.get("doc"), dict) and _doc_shaped(last["doc"])):
        out["reason"] = "never built in this checkout"
        return out
    return {**out, **_changes(last["doc"], doc)}


def _changes(old: dict, doc: dict) -> dict:
    old_files = {f[0]: f[1:] for f in old.get("files", [])}
    new_files = {f[0]: f[1:] for f in doc["files"]}
    out = {
        "changed_files": sorted(n for n in new_files if n in old_files and old_files[n] != new_files[n]),
        "added_files": sorted(set(new_files) - set(old_files)),
        "removed_files": sorted(set(old_files) - set(new_files)),
        "changed_params": sorted(
            k for k in set(old.get("params", {})) | set(doc["params"]) if old.get("params", {}).get(k) != doc["params"].get(k)
        ),
        "changed_deps": sorted(d for d in doc["deps"] if old.get("deps", {}).get(d) != doc["deps"][d]),
    }
    for k in ("rule_version", "tool"):
        if old.get(k) != doc.get(k):
            out.setdefault("changed_other", []).append(k)
    return out
