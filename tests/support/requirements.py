"""Skip-or-fail for tests that need a real engine or server.

On a user's machine a missing Docker engine or server skips the test with a
reason. CI sets FLYTE_BUILD_TEST_STRICT=1, which turns each such skip into a
failure, so a green CI run always exercised the real parts.
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("FLYTE_BUILD_TEST_STRICT") == "1"


def require(available: bool, reason: str) -> None:
    """Skip (or, in strict mode, fail) unless `available`."""
    if available:
        return
    if STRICT:
        pytest.fail(f"FLYTE_BUILD_TEST_STRICT=1 and a required part is missing: {reason}", pytrace=False)
    pytest.skip(reason)
