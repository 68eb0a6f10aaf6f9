"""sample_monorepo's bundle bytes and every target's action key, against a recorded set.

Same inputs, same digests (BUILD.md, Concepts: same sources, same bundles and keys): a refactor that changes a
bundle's bytes or an action key, even by accident, fails here and the diff names
the targets. `tests/data/sample_monorepo_digests.json` was recorded from main
before the issue-18 refactors; a change of keys on purpose (a rule's `version`
bumped, a new input) re-records it in the same commit:

    python -m tests.test_recorded_digests      # from the repository's root

The copy is built under pytest's temp dir, not where the set was recorded, so
the keys are also shown not to depend on the checkout path. Every action key
includes flyte-build's own version (engine `key_document`, "tool": a new release
rebuilds everything, which is intended) and the check keys include flyte's
version (the SDK that serializes the specs): the file records both, and a
mismatch is reported as such rather than as 28 changed keys. Only bundles are
built: images, checks and deploys are keyed with their dependencies unbuilt,
which is what `explain` reports on a fresh cache, and needs no Docker engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.cli import copy_sample, flyte_build

DATA = Path(__file__).parent / "data" / "sample_monorepo_digests.json"


def observe(root: Path) -> dict:
    """Build sample_monorepo's bundles in a fresh copy and cache under `root`; every key and bundle digest."""
    from flyte_build.__about__ import __version__
    from flyte_build.flyte_adapter.version_contract import flyte_version

    repo, cache = copy_sample(root / "repo"), root / "cache"
    build = flyte_build("build", "--json", cwd=repo, cache=cache).assert_ok().json()
    bundles = {t["target"]: t["digest"] for t in build["targets"]}
    keys = {t["target"]: t["key"] for t in build["targets"]}
    listed = flyte_build("targets", "--json", cwd=repo, cache=cache, in_process=True).assert_ok().json()
    for t in listed["targets"]:
        if t["target"] not in keys:
            report = flyte_build("explain", t["target"], "--json", cwd=repo, cache=cache, in_process=True).assert_ok().json()
            keys[t["target"]] = report["key"]
    return {"tool": __version__, "flyte": flyte_version(), "bundles": dict(sorted(bundles.items())),
            "keys": dict(sorted(keys.items()))}


@pytest.mark.timeout(300)
def test_bundles_and_action_keys_match_the_recorded_set(tmp_path):
    recorded = json.loads(DATA.read_text())
    now = observe(tmp_path)
    assert (now["tool"], now["flyte"]) == (recorded["tool"], recorded["flyte"]), (
        f"flyte-build {now['tool']} / flyte {now['flyte']} here, the set was recorded with "
        f"{recorded['tool']} / {recorded['flyte']}: every key includes them; re-record (see this module's docstring)")
    changed_bundles = {t: (recorded["bundles"].get(t), d) for t, d in now["bundles"].items() if recorded["bundles"].get(t) != d}
    assert set(now["bundles"]) == set(recorded["bundles"]), (sorted(now["bundles"]), sorted(recorded["bundles"]))
    assert not changed_bundles, f"bundle bytes changed (recorded, now): {json.dumps(changed_bundles, indent=1)}"
    assert set(now["keys"]) == set(recorded["keys"]), (sorted(now["keys"]), sorted(recorded["keys"]))
    changed_keys = {t: (recorded["keys"][t], k) for t, k in now["keys"].items() if recorded["keys"][t] != k}
    assert not changed_keys, f"action keys changed (recorded, now): {json.dumps(changed_keys, indent=1)}"


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="record-digests-") as tmp:
        doc = observe(Path(tmp))
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(doc['bundles'])} bundles and {len(doc['keys'])} keys in {DATA}", file=sys.stderr)


if __name__ == "__main__":
    main()
