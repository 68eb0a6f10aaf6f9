"""`flyte-build watch`: a real watcher on a real tree, edited by the test, with
and without the resident process, ended by SIGINT."""

from __future__ import annotations

import os
import select
import signal
import time

import pytest

from tests.support.cli import popen
from tests.test_daemon import Daemonised

pytestmark = pytest.mark.timeout(180)


class Output:
    """What a running process has written to one pipe so far."""

    def __init__(self, pipe):
        self.fd, self.text = pipe.fileno(), ""

    def wait_for(self, piece: str, after: int = 0, seconds: float = 60) -> int:
        """Read until `piece` appears at or after offset `after`; its offset."""
        deadline = time.time() + seconds
        while piece not in self.text[after:]:
            left = deadline - time.time()
            assert left > 0, f"{piece!r} never came; so far:\n{self.text}"
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 65536)
                assert chunk, f"the pipe closed before {piece!r}:\n{self.text}"
                self.text += chunk.decode("utf-8", "replace")
        return self.text.index(piece, after)


@pytest.mark.slow
@pytest.mark.parametrize("resident", [True, False], ids=["daemon", "no-daemon"])
def test_watch_rebuilds_what_a_save_changed_and_stops_cleanly_on_sigint(tmp_path, resident):
    d = Daemonised(tmp_path / "w")
    env = {"CI": None, "FLYTE_BUILD_DAEMON": None} if resident else {"CI": "true"}
    proc = popen("watch", "--debounce", "200", cwd=d.repo, cache=d.cache, env=env)
    err = Output(proc.stderr)
    try:
        at = err.wait_for("watching ")
        # two saves within the debounce window: one round, naming both
        (d.repo / "app.py").write_text((d.repo / "app.py").read_text().replace("x + 1", "x + 2"))
        (d.repo / "helper.py").write_text("VALUE = 1\n")
        at = err.wait_for("changed: ", at)
        round_ = err.text[at:err.wait_for("build exited 0", at)]
        assert "app.py (modified)" in round_ and "helper.py (added)" in round_, err.text
        err.wait_for("waiting for changes", at)
        assert err.text.count("changed: ") == 1, err.text
        served = d.status()
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        d.stop()
    text = err.text + rest
    assert proc.returncode == 0, text
    assert "stopped watching" in text and "Traceback" not in text
    # the first round built the bundle, the second rebuilt it for the edit
    assert out.count("1 built, 0 cached") == 2, out
    d.run("cache", "verify", env={"CI": "true"}).assert_ok()
    if resident:  # both rounds ran in the resident process
        assert served["running"] is True and served["served"] == 2, served
    else:
        assert served["running"] is False
