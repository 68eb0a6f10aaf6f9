"""Layering: no module imports from a layer above its own.

flyte_build's modules stack in layers, each importing only from its own layer
and those below (every import counts, those inside functions too):

    base      errors, hashing, atomic, reach, model, the config schema, archives/ (but
              artifact_copies), processes/ (the children), discovery's imports and
              reads, git changes, the flyte adapter package: helpers that know
              nothing of a run
    config    config/ (the pyproject tables, the interpreter) and flyte's config file
    storage   flyte_build.stores: content store, action cache, remote stores, file digests
    engine    context, rule API, discovery (and the code it hands its child), graph,
              engine, rule-set loading
    run       workspace, affected, the Python API, the shared build manifest and
              affected summaries
    front     commands, CLI, hatch plugin, the no-op snapshot

Rule sets (`rules/`) sit beside the front: they import from flyte_build only
`flyte_build.rule_api` (which re-exports the helpers they need, at or below its
own layer) and, for a goal kind's command and API verbs, `flyte_build.goal_api`;
from rules/ only their own kind's folder (the engine loads them by path;
nothing in flyte_build imports them).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAYERS = {
    "base": [
        "flyte_build.__about__", "flyte_build.errors", "flyte_build.hashing", "flyte_build.atomic", "flyte_build.model",
        "flyte_build.reach", "flyte_build.flyte_adapter", "flyte_build.config.schema", "flyte_build.archives",
        "flyte_build.processes", "flyte_build.discovery.imports", "flyte_build.discovery.reads",
        "flyte_build.discovery.recorder", "flyte_build.discovery.code_prints",
        "flyte_build.affected.gitchanges",
    ],
    "config": ["flyte_build.config", "flyte_build.flyte_config"],
    "storage": ["flyte_build.stores"],
    "engine": [
        "flyte_build.engine", "flyte_build.rule_api", "flyte_build.discovery", "flyte_build.stores.shared_discovery",
        "flyte_build.render", "flyte_build.progress",
    ],
    "run": ["flyte_build.workspace", "flyte_build.archives.artifact_copies", "flyte_build.affected", "flyte_build.api",
            "flyte_build.stores.build_manifest", "flyte_build.stores.shared_affected"],
    "front": [
        "flyte_build.commands", "flyte_build.goal_api", "flyte_build.cli", "flyte_build.__main__", "flyte_build.hatch_plugin",
        "flyte_build.stores.snapshot", "flyte_build.daemon", "flyte_build",
    ],
}
ORDER = list(LAYERS)
RULES_API = "flyte_build.rule_api"
# a goal kind's command and API verbs (the deploy kind's) drive a run through this one
GOAL_API = "flyte_build.goal_api"

# The rule boundary: a rule module imports from flyte_build only the rule API
# (whose HELPERS re-export, on purpose, the core helpers rules need) or, for a
# goal kind's command and API verbs, the goal API, and from
# rules/ only its own kind's folder: another kind's target is reached through
# the engine (`deps` and `req.deps`, `view.has_target`, `view.inputs_of`), never
# its modules. Crossings still to remove would be listed here (none are left),
# so the test stops any new one; remove a line when its import goes.
KNOWN: set[tuple[str, str]] = set()


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    p = REPO / name.replace(".", "/")
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The flyte_build and rules modules `path` imports, anywhere in it."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from . import atomic` imports a module
                sub = f"{target}.{a.name}"
                out.add(sub if _is_module(sub) else target)
    return {m for m in out if m.split(".")[0] in ("flyte_build", "rules") and m != mod}


def layer_of(module: str) -> str | None:
    """The layer of the longest listed prefix of `module`."""
    best = None
    for layer, prefixes in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (layer, p)
    return best[0] if best else None


def _sources(top: str) -> list[Path]:
    return sorted((REPO / top).rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [_module(p) for p in _sources("flyte_build") if layer_of(_module(p)) is None]
    assert not missing, f"modules with no layer (add them to LAYERS in {__file__}): {missing}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in _sources("flyte_build"):
        mod = _module(path)
        mine = ORDER.index(layer_of(mod))
        for imp in sorted(imports_of(path)):
            if imp.startswith("rules"):
                upward.append(f"{mod} imports {imp} (the engine loads rule sets by path, never by import)")
                continue
            theirs = layer_of(imp)
            if theirs is not None and ORDER.index(theirs) > mine:
                upward.append(f"{mod} ({layer_of(mod)}) imports {imp} ({theirs})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def _kind(module: str) -> str | None:
    """The kind folder of a rules module (rules.image.rule -> image); None for the set's own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def boundary_crossings() -> list[tuple[str, str]]:
    """(rules module, import) pairs past the rule API or into another kind's folder."""
    out = []
    for path in _sources("rules"):
        mod = _module(path)
        for imp in sorted(imports_of(path)):
            if imp in (RULES_API, GOAL_API):
                continue
            if imp.startswith("rules.") and _kind(imp) is not None and _kind(imp) == _kind(mod):
                continue
            out.append((mod, imp))
    return out


def test_rules_import_the_core_only_through_the_rule_api_and_no_other_kind():
    bad = [f"{mod} imports {imp}" for mod, imp in boundary_crossings() if (mod, imp) not in KNOWN]
    assert not bad, ("rule modules importing past flyte_build.rule_api or another kind's folder "
                     "(widen rule_api.HELPERS, or ask the engine for the other kind's target):\n" + "\n".join(bad))


def test_known_crossings_are_still_there():
    """A KNOWN line whose import is gone must go too, so the list only shrinks."""
    stale = sorted(KNOWN - set(boundary_crossings()))
    assert not stale, f"remove from KNOWN in {__file__}: {stale}"


def test_the_rule_api_re_exports_only_what_is_at_or_below_its_layer():
    from flyte_build import rule_api

    mine = ORDER.index(layer_of(RULES_API))
    for name, (module, attr) in rule_api.HELPERS.items():
        assert layer_of(module) is not None and ORDER.index(layer_of(module)) <= mine, (name, module, layer_of(module))
        assert getattr(rule_api, name) is not None  # it resolves
    try:
        rule_api.no_such_helper
    except AttributeError as exc:
        assert "no_such_helper" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_imports_inside_functions_and_relative_ones_count():
    # config_cmd imports these two inside run(), relative to its package
    found = imports_of(REPO / "flyte_build" / "commands" / "config_cmd.py")
    assert {"flyte_build.flyte_config", "flyte_build.engine.rulesets", "flyte_build.commands.common"} <= found
