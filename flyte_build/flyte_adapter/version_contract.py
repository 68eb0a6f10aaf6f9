"""The flyte versions flyte-build is tested with (the adapter's contract).

`tests/test_flyte_adapter.py` checks every flyte name and call the adapter
package uses against the installed SDK, and that the installed flyte is one of
SUPPORTED_FLYTE; an SDK change that breaks an assumption fails there first.
"""

from __future__ import annotations

SUPPORTED_FLYTE = (">=2.12.1", "<2.13")


def flyte_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flyte")
    except PackageNotFoundError:
        return "absent"


def check_version() -> str | None:
    """A warning when the installed flyte is outside the tested range."""
    from packaging.version import Version

    v = flyte_version()
    if v == "absent":
        return "flyte is not installed"
    ver = Version(v)
    if not (Version("2.12.1") <= ver < Version("2.13")):
        return f"flyte {v} is outside the tested range {', '.join(SUPPORTED_FLYTE)}"
    return None
