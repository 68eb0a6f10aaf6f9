"""Test helpers shared by the suites (kept out of the tests themselves)."""
