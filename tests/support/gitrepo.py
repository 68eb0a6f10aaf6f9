"""A real git repository holding a copy of sample_monorepo, for change-driven tests.

`GitRepo.create(path)` copies the sample, commits it as `base`, and can
`reset()` back to exactly that commit between tests. Keeping one repository
at one path for a whole test session matters for speed: discovery results
and `affected`'s per-revision summaries are cached under the root's path and
the commit's sha, so after the first test neither imports user code again
unless a test changed what discovery reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .cli import Run, copy_sample, flyte_build

# fixed identity and dates: the base commit's sha is the same on every run
GIT_ENV = {
    "GIT_AUTHOR_NAME": "flyte-build tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "flyte-build tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


@dataclass
class GitRepo:
    root: Path
    cache: Path
    base: str = ""
    # run the CLI in this process (tests/support/cli.py): local commands only, no servers
    in_process: bool = False
    project: str = ""  # the folder the CLI runs in (a project below the git root), "" for the root

    @classmethod
    def create_tree(cls, root: Path, cache: Path, files: dict[str, str], project: str = "",
                    in_process: bool = False) -> "GitRepo":
        """A repository of `files` (relative path -> text), committed as `base`."""
        repo = cls(root, cache, in_process=in_process, project=project)
        for rel, text in files.items():
            repo.write(rel, text)
        repo.git("init", "-q", "-b", "main")
        repo.base = repo.commit("base")
        repo.git("tag", "base")
        return repo

    @classmethod
    def create(cls, root: Path, cache: Path, in_process: bool = False) -> "GitRepo":
        copy_sample(root)
        repo = cls(root, cache, in_process=in_process)
        repo.git("init", "-q", "-b", "main")
        repo.git("add", "-A")
        repo.base = repo.commit("sample monorepo")
        repo.git("tag", "base")
        return repo

    def git(self, *args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=self.root, env={**os.environ, **GIT_ENV}, capture_output=True, text=True)
        assert proc.returncode == 0, f"git {' '.join(args)} failed: {proc.stderr}"
        return proc.stdout

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def reset(self) -> None:
        """Back to the base commit: tracked edits undone, new files removed."""
        self.git("checkout", "-q", "-f", "main")
        self.git("reset", "-q", "--hard", self.base)
        self.git("clean", "-q", "-fdx")

    # -- edits ----------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, text: str) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def append(self, rel: str, text: str) -> None:
        with open(self.path(rel), "a") as f:
            f.write(text)

    def replace(self, rel: str, old: str, new: str) -> None:
        text = self.path(rel).read_text()
        assert old in text, f"{old!r} not in {rel}"
        self.path(rel).write_text(text.replace(old, new))

    def delete(self, rel: str) -> None:
        p = self.path(rel)
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    def move(self, old: str, new: str) -> None:
        self.git("mv", old, new)

    # -- flyte-build ------------------------------------------------------------
    def run(self, *args: str, env: dict | None = None) -> Run:
        return flyte_build(*args, cwd=self.root / self.project, cache=self.cache, env=env, in_process=self.in_process)
