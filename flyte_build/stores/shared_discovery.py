"""Discovery results through the shared cache, keyed by content.

A fresh CI machine whose shared cache already holds every target still had to
import every user module (and flyte) to learn which environments exist. Here
the result of a discovery is published under a key of what it depends on,
with no machine-specific part: the discovery settings without the checkout
path or the interpreter's path (flyte's version marker digest, Python's
version, project, domain, the selection, source roots), and the digest of
every candidate module and ignore file. Another checkout at another path
with the same sources computes the same key.

It decides images, specs, files and project/domain, so it is published only
signed and read only by a reader holding verify keys. Before a shared result
is used it is checked like any other untrusted entry: it must parse, name its
own key and carry a trusted signature; every name in it must be a plain
relative path whose real path is inside the root (or one of flyte's config
files the reader witnesses itself); every file the discovery read (each
candidate and every module its imports loaded) must have, here, the digest
the entry records, and so must whatever else the modules read (its witnesses:
variables, data files, listings), else it is a miss. Then no
user code and no flyte is imported. The entry also carries each file's
parsed import records (keyed by the file's digest, the same data the stat
cache keeps), so the bundles' import closures need no parsing either.

Layout: `discovery/<2 hex>/<key>.json.gz` under the shared prefix, zlib-
compressed canonical JSON.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

from ..discovery import carried_imports
from ..discovery import reads as discovery_reads
from ..hashing import canonical_json, key_of
from .documents import Bounds, seal

FORMAT = 2  # 2: the result names the installed distributions its modules imported
MAX_STORED = 16 << 20  # a stored object larger than this is not read
BOUNDS = Bounds(max_bytes=64 << 20)  # nor inflated or parsed past these (see `stores.documents`)
DOMAIN = b"flyte-build discovery entry v1\x00"  # what a signature covers (see `signing`)
_HEX = re.compile(r"[0-9a-f]{64}")
# per-machine settings that must not split the key across checkouts
_LOCAL_SETTINGS = ("root", "executable", "installed")


def key(settings: dict, candidates: dict[str, str | None], ignores: dict[str, str | None]) -> str:
    portable = {k: v for k, v in settings.items() if k not in _LOCAL_SETTINGS}
    return key_of({"shared-discovery": FORMAT, "settings": portable, "candidates": candidates, "ignores": ignores})


def rel_of(key_: str) -> str:
    return f"discovery/{key_[:2]}/{key_}.json.gz"


class Refused(ValueError):
    pass


def _rel_ok(rel) -> bool:
    return (isinstance(rel, str) and rel != "" and not rel.startswith("/") and "\\" not in rel and "\0" not in rel
            and not any(p in ("", ".", "..") for p in rel.split("/")))


def _all_hex(values) -> bool:
    return all(type(h) is str and _HEX.fullmatch(h) for h in set(values))


def _records_ok(parsed: dict) -> bool:
    """Each file's import records: [[level, module, [names]]], or {"error": [_, message]}."""
    lists = []
    for recs in parsed.values():
        if isinstance(recs, dict):
            err = recs.get("error")
            if not (isinstance(err, list) and len(err) == 2 and isinstance(err[1], str)):
                return False
        elif isinstance(recs, list):
            lists.append(recs)
        else:
            return False
    flat = [r for recs in lists for r in recs]
    return ({type(r) for r in flat} <= {list} and {len(r) for r in flat} <= {3} and {type(r[0]) for r in flat} <= {int, bool}
            and {type(r[1]) for r in flat} <= {str} and {type(r[2]) for r in flat} <= {list}
            and {type(n) for r in flat for n in r[2]} <= {str})


def _graph_ok(graph) -> bool:
    if not isinstance(graph, dict):
        return False
    gf, edges = graph.get("files"), graph.get("edges")
    if not (isinstance(gf, list) and isinstance(edges, list) and len(gf) == len(edges) and carried_imports.all_plain(gf)
            and {type(es) for es in edges} <= {list}):
        return False
    flat = [i for es in edges for i in es]
    return not flat or ({type(i) for i in flat} <= {int, bool} and min(flat) >= 0 and max(flat) < len(gf))


def _check(doc, key_: str) -> None:
    """Shape checks: anything else is refused before a field is used."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key_:
        raise Refused("not a discovery entry for this key")
    files, parsed, result, book = doc.get("files"), doc.get("parsed"), doc.get("result"), doc.get("book")
    if not isinstance(files, dict) or not carried_imports.all_plain(files) or not _all_hex(h for h in files.values() if h is not None):
        raise Refused("bad file list")
    if not isinstance(parsed, dict) or not _all_hex(parsed) or not _records_ok(parsed):
        raise Refused("bad import records")
    if not isinstance(result, dict) or not isinstance(result.get("envs"), list) or not isinstance(book, dict):
        raise Refused("bad result")
    for e in result["envs"]:
        if not isinstance(e, dict) or not _rel_ok(e.get("file")) or e["file"] not in files:
            raise Refused("an environment defined outside the files read")
    dists = result.get("distributions", [])
    if not (isinstance(dists, list) and all(isinstance(n, str) and len(n) < 300 for n in dists)):
        raise Refused("bad distributions")
    for group in ("loaded_files", "sys_path"):
        names = result.get(group, ())
        if not isinstance(names, (list, tuple)) or not carried_imports.all_plain(n for n in names if n != "."):
            raise Refused(f"bad {group}")
    graph = book.get("graph")
    if graph is not None and not _graph_ok(graph):
        raise Refused("bad import graph")
    if "imports" in doc and not carried_imports.shape_ok(doc["imports"]):
        raise Refused("bad resolved imports")
    all_envs = book.get("all_envs")
    if all_envs is not None and not (isinstance(all_envs, list) and all(isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x) for x in all_envs)):
        raise Refused("bad environment list")


def fetch(shared, stats, key_: str, root: Path, digests) -> dict | None:
    """The verified entry for `key_` (its `result`, `book` and `files`), or None."""
    if shared.verifier is None:
        # a result decides images, specs, files and project/domain, and nothing here
        # could vouch for its writer: not read at all (this reader discovers itself)
        return None
    rel = rel_of(key_)
    doc = shared.read_signed_document(rel, stats, "discovery entry", DOMAIN, lambda d: _check(d, key_),
                                      MAX_STORED, BOUNDS)
    if doc is None:
        return None
    # what the modules read besides themselves (data files, variables): checked
    # here before use, as the local cache does; a signed result from a machine
    # with another STAGE is another machine's answer, not a forgery (a miss)
    reads = doc["result"].get("reads_witness")
    why = discovery_reads.shared_names_why_not(reads, root)
    inside = carried_imports.Inside(os.path.realpath(root))  # the names are plain (`_check`)
    bad = next((f for f in doc["files"] if not inside(f)), None)
    if why is None and bad is not None:
        why = f"file {bad[:200]!r} is not a path inside the project root"
    if why is None and doc["result"].get("witness") != key_of(reads):
        why = "its witnesses are not the ones its key names"
    if why is not None:
        shared.refuse_document(rel, f"discovery entry: {why}", stats)
        return None
    if not discovery_reads.still_valid(reads, root, digests):
        return None
    # every file the discovery read must be, here, what it was there
    for frel, hex_ in doc["files"].items():
        try:
            here = digests.digest(root / frel)[0]
        except OSError:
            here = None
        if here != hex_:
            return None  # not corrupt: another tree with the same candidates (a miss)
    wanted = {h for h in doc["files"].values() if h}
    for hex_, recs in doc["parsed"].items():
        if hex_ in wanted and digests.parsed(hex_) is None:
            digests.remember_parsed(hex_, recs)
    return doc


def publish(shared, stats, key_: str, files: dict, result: dict, book: dict, digests, root: Path,
            search_roots: list[Path]) -> dict | None:
    """Publish a fresh discovery result (create-only) with the import records
    of every file it read and their resolutions (`carried_imports`); returns
    those resolutions when it published."""
    from ..engine.import_edges import import_records

    parsed = {}
    for frel, hex_ in files.items():
        if not hex_ or not frel.endswith(".py"):
            continue
        if digests.parsed(hex_) is None:
            try:
                import_records(str(root / frel), hex_, digests)
            except (OSError, SyntaxError, ValueError):
                pass
        got = digests.parsed(hex_)
        if got is not None:
            parsed[hex_] = got
    # unsigned, no reader would use it (see `fetch`); nor would any reader check
    # witnesses that name files outside the root
    if shared.read_only or shared.offline or shared.signer is None:
        return None
    if discovery_reads.shared_names_why_not(result.get("reads_witness"), root) is not None:
        return None
    doc = {"format": FORMAT, "key": key_, "files": files, "result": result, "book": book, "parsed": parsed}
    carried = carried_imports.collect(root, search_roots, files, digests)
    if carried is not None:
        doc["imports"] = carried
    sig = shared.signer.sign_document(DOMAIN, canonical_json(doc)) if shared.signer is not None else None
    shared.publish_document(rel_of(key_), zlib.compress(seal(doc, sig), 6), stats)
    return carried
