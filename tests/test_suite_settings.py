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


def _module_file(name: str) -> str:
    """A test file with a module fixture, whose tests say which worker ran them."""
    return f"""
        import pytest
        from conftest import note

        @pytest.fixture(scope="module")
        def made():
            note("setup {name}")

        @pytest.mark.parametrize("i", range(4))
        def test_{name}(made, i):
            note("{name}")
    """


def _group_file(name: str) -> str:
    """A test file of the group (the -o below), using the session fixture."""
    return f"""
        import pytest
        from conftest import note

        @pytest.mark.parametrize("i", range(3))
        def test_{name}(shared, i):
            note("g")
    """


WORKER_FILES = {
    "test_a.py": _module_file("a"),
    "test_b.py": _module_file("b"),
    "test_g1.py": _group_file("g1"),
    "test_g2.py": _group_file("g2"),
    "test_hang.py": """
        import subprocess, sys, pytest

        @pytest.mark.timeout(2)
        def test_hangs():
            subprocess.run([sys.executable, "-c", "import time; time.sleep(600)"])
    """,
    "conftest.py": """
        import os, pytest

        def note(what):
            with open(os.environ["WORKER_LOG"], "a") as f:
                f.write(f"{what} {os.environ.get('PYTEST_XDIST_WORKER', '-')}\\n")

        @pytest.fixture(scope="session")
        def shared():
            note("setup shared")
    """,
}


@pytest.mark.timeout(300)
def test_workers_take_whole_files_and_groups_and_a_hung_test_still_fails_alone(tmp_path):
    # the suite's own settings (pyproject): two workers, our scheduler, per-test timeouts
    import os
    from pathlib import Path

    for name, text in WORKER_FILES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    log = tmp_path / "workers.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), WORKER_LOG=str(log))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "timeout",
                           "-p", "tests.support.xdist_scheduling", "-n", "2", "--dist", "loadfile",
                           "-o", "xdist_file_groups=grp = test_g1.py test_g2.py", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=250)
    assert proc.returncode == 1 and "1 failed, 14 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "Timeout" in proc.stdout
    lines = [line.split() for line in log.read_text().splitlines()]
    ran = {}
    for *what, worker in lines:
        ran.setdefault(" ".join(what), []).append(worker)
    # each module fixture and the group's session fixture set up once
    assert len(ran["setup a"]) == len(ran["setup b"]) == len(ran["setup shared"]) == 1, ran
    # a file's tests, and a group's across its files, on one worker
    assert len(ran["a"]) == 4 and len(set(ran["a"])) == 1, ran
    assert len(ran["b"]) == 4 and len(set(ran["b"])) == 1, ran
    assert len(ran["g"]) == 6 and set(ran["g"]) == set(ran["setup shared"]), ran
    # and the two workers both worked
    assert {w for ws in ran.values() for w in ws} == {"gw0", "gw1"}, ran


def test_the_checked_sample_group_holds_every_suite_that_uses_it(pytestconfig):
    # a suite using the session's checked sample outside the group would build it again on the other worker
    from pathlib import Path

    from tests.support.xdist_scheduling import file_groups

    root = Path(__file__).resolve().parents[1]
    users = {p.relative_to(root).as_posix() for p in (root / "tests").rglob("test_*.py") if "checked_sample" in p.read_text()}
    users.discard("tests/test_suite_settings.py")
    group = {f for f, g in file_groups(pytestconfig.getini("xdist_file_groups")).items() if g == "checked_sample"}
    assert users and users == group, (users, group)
    assert all((root / f).is_file() for f in group)
