"""A specs:<env> result as the deploy kind reads it: through the engine's
output (`rule_api.read_json`), not the specs kind's modules."""

from __future__ import annotations

from flyte_build.rule_api import BuildFailed, read_json

SPECS = "specs"  # the kind whose result holds an env's serialized tasks
IMAGE = "image"  # the kind that names (describe) and builds an env's image
CHECK = "check"  # the kind that proves an env's tasks load in its image
BUNDLE = "bundle"  # the kind that makes an env's code bundle


def specs_doc(result) -> dict:
    """{"env": {"image": ..., "tasks": [...]} (or "app")}; BuildFailed naming the target when malformed."""
    doc = read_json(result)
    if not isinstance(doc.get("env"), dict):
        raise BuildFailed(f"{result.target}: malformed specs; run the build again")
    return doc
