"""Which installed distributions the user's modules imported, by their
metadata directories' names (`tinydep-2.0.dist-info`: the version is in it).

Discovery runs the modules in the project's interpreter, and a module may
read an installed package at import (its version into an image, its
constants into a task's environment). What `pip install -U` changes there
must change what a build ships, so the result names the distributions its
modules brought in beyond what flyte itself loaded (`mark_baseline`, called
once flyte is initialised): the specs' key includes them, and a shared
result is taken only where the same ones are installed (`installed_here`).
Distributions flyte loads itself move with flyte's version, which keys
everything already.
"""

from __future__ import annotations

import os
import re
import sys

_baseline: frozenset = frozenset()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*\.(dist-info|egg-info)")


def mark_baseline() -> None:
    """Remember the modules loaded so far (flyte and its own imports)."""
    global _baseline
    _baseline = frozenset(sys.modules)


def _site_dirs() -> list[str]:
    out = []
    for p in sys.path:
        try:
            if p and os.path.isdir(p) and any(n.endswith((".dist-info", ".egg-info")) for n in os.listdir(p)):
                out.append(os.path.realpath(p) + os.sep)
        except OSError:
            continue
    return out


def _top(real: str, sites: list[str]) -> str | None:
    for site in sites:
        if real.startswith(site):
            return real[len(site):].split(os.sep, 1)[0].split(".", 1)[0]
    return None


# What the installed distributions say, once per process: a warm discovery
# child's forks ask again after each edit, and what is installed keys the warm
# child's settings (a change starts a new one), so its answers stand for them.
_REAL: dict[str, str] = {}
_METADATA: dict = {}


def imported() -> list[str]:
    """The metadata directory names of the distributions providing the
    top-level packages first loaded since the baseline, leaving out flyte's
    and those it depends on (it may load them lazily, as the user's calls need)."""
    sites = _site_dirs()
    before, tops = set(), set()
    for name, module in list(sys.modules.items()):
        f = getattr(module, "__file__", None)
        top = _top(_realpath(f), sites) if f else None
        if top:
            (before if name in _baseline else tops).add(top)
    tops -= before
    if not tops:
        return []
    owners, flytes = _installed()
    names = {d for top in tops for d in owners.get(top, ()) if _norm(d) not in flytes}
    return sorted(filter(None, map(_metadata_dir, names)))


def _realpath(path: str) -> str:
    got = _REAL.get(path)
    if got is None:
        got = _REAL[path] = os.path.realpath(path)
    return got


def _installed() -> tuple[dict, set]:
    """({top-level package: distributions providing it}, flyte's requirements' closure)."""
    if "owners" not in _METADATA:
        from importlib import metadata

        _METADATA["owners"] = metadata.packages_distributions()
        _METADATA["flytes"] = _closure(metadata, "flyte")
    return _METADATA["owners"], _METADATA["flytes"]


def _metadata_dir(dist_name: str) -> str | None:
    key = ("dir", dist_name)
    if key not in _METADATA:
        from importlib import metadata

        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            _METADATA[key] = None
        else:
            path = getattr(dist, "_path", None)  # the metadata directory itself, for a dist on disk
            _METADATA[key] = os.path.basename(str(path)) if path else f"{dist_name}-{dist.version}.dist-info"
    return _METADATA[key]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(metadata, name: str) -> set[str]:
    """`name` and every distribution it requires, transitively, by normalised
    name (markers other than extras aside: a superset of what is installed)."""
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if _norm(n) in seen:
            continue
        seen.add(_norm(n))
        try:
            reqs = metadata.requires(n) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            head = re.match(r"[A-Za-z0-9._-]+", r)
            if head and not re.search(r"extra\s*==", r):  # an extra's requirement is the user's choice
                todo.append(head.group(0))
    return seen


def installed_here(names, listing: tuple) -> bool:
    """Whether every name (from a result read from a cache: untrusted) is a
    metadata directory in this interpreter's `listing` (per site directory,
    its entries: `interpreter.Interpreter.distributions`)."""
    if not isinstance(names, list) or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names):
        return False
    here = {e for entries in listing for e in entries}
    return all(n in here for n in names)
