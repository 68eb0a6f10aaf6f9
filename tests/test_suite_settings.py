"""The suite's own guard rails: a hung call fails its test instead of hanging CI."""

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.timeout(120)
def test_a_hung_test_fails_alone_and_the_run_goes_on(tmp_path):
    (tmp_path / "test_hang.py").write_text(textwrap.dedent("""
        import subprocess, sys, pytest

        @pytest.mark.timeout(2)
        def test_hangs():
            # a server call that never answers, as a child process that never exits
            subprocess.run([sys.executable, "-c", "import time; time.sleep(600)"])

        def test_after():
            assert True
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "timeout", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed" in proc.stdout
    assert "Timeout" in proc.stdout


def test_the_suite_sets_a_default_timeout(pytestconfig):
    # every test, including the docker and server ones, gets a deadline
    assert float(pytestconfig.getini("timeout")) > 0
