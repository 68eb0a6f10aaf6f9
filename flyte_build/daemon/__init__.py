"""The resident process: one warm flyte-build per repository behind a Unix
socket, its thin client, and `watch`.

`client` runs first in every `flyte-build` command and imports almost
nothing; `server` is the daemon's loop; `runner` runs one command in a fork
of the warm daemon; `watch` rebuilds on save. See BUILD.md, "Resident process".
"""
