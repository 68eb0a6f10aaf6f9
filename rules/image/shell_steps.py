"""The pieces of a Dockerfile's RUN steps: quoting, the RUN line itself, pip's
flags for a layer, and the BuildKit secret mounts a layer asks for."""

from __future__ import annotations

import hashlib
import re

from flyte_build.rule_api import UserError


def env_quote(v: str) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_quote(v: str) -> str:
    return "'" + str(v).replace("'", "'\"'\"'") + "'"


def run_line(cmd: str, mounts: tuple[str, ...] = ()) -> str:
    """A RUN line; `mounts` are (BuildKit mount flags, shell prefix) from `SecretMounts.mounts`."""
    flags, prefix = mounts if mounts else ("", "")
    lines = cmd.splitlines()
    if prefix:
        lines[0] = prefix + lines[0]
    return "RUN " + (flags + " " if flags else "") + " \\\n    ".join(lines)


# create the venv an earlier ENV VIRTUAL_ENV names, the first time something installs
VENV_GUARD = '{ [ -z "$VIRTUAL_ENV" ] || [ -x "$VIRTUAL_ENV/bin/python" ] || python3 -m venv "$VIRTUAL_ENV"; }'


class SecretMounts:
    """The secret mounts of an image's layers, as flyte's builder gives them.

    flyte turns `secret_mounts=[Secret(key=..., as_env_var=... | mount=...)]` (or a bare key)
    into `RUN --mount=type=secret,id=ID,env=VAR|target=PATH` and `docker buildx build
    --secret id=ID,env=GROUP_KEY` (else `src=/etc/secrets/group_key`). The Dockerfile
    frontend built into the engine here has no `env=` for secret mounts, so an env-var
    secret is mounted as a file and exported for that one RUN: visible to the step,
    absent from the image, its history and its environment afterwards."""

    def __init__(self) -> None:
        self.needed: dict[str, tuple[str, str]] = {}  # id -> (host env var, host file)

    def mounts(self, layer: dict, where: str) -> tuple[str, str]:
        flags, exports = [], []
        for raw in layer.get("secret_mounts") or ():
            if isinstance(raw, str):
                key, group, mount, env = raw, None, None, None
            elif isinstance(raw, dict) and isinstance(raw.get("key"), str):
                key, group, mount, env = raw["key"], raw.get("group"), raw.get("mount"), raw.get("as_env_var")
            else:
                raise UserError(f"{where}: secret mount {raw!r} is neither a key nor a flyte.Secret")
            if not mount and not env:
                env = (f"{group}_{key}" if group else key).replace("-", "_").upper()
            if env and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", env):
                raise UserError(f"{where}: secret {key!r}: {env!r} is not a valid environment variable name")
            # flyte's id for the secret, hash(secret): the first 64 bits of its stable hash, which
            # CPython's hash() keeps when they fit a signed 64-bit word and else folds modulo
            # 2**61 - 1 (written out, so the id is the same on any machine)
            stable = hashlib.sha256("|".join([key, group or "", str(mount or ""), env or ""]).encode()).hexdigest()
            n = int(stable[:16], 16)
            ident = str(n if n < 2**63 else n % (2**61 - 1))
            parts = [k for k in (group, key) if k]
            self.needed[ident] = ("_".join(k.upper() for k in parts), "/etc/secrets/" + "_".join(parts))
            if mount:
                flags.append(f"--mount=type=secret,id={ident},target={mount}")
            else:
                flags.append(f"--mount=type=secret,id={ident},target=/run/secrets/{ident}")
                exports.append(f'{env}="$(cat /run/secrets/{ident})" && export {env} && ')
        return " ".join(flags), "".join(exports)

    def records(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((i, env, path) for i, (env, path) in sorted(self.needed.items()))


def pip_flags(layer: dict) -> list[str]:
    flags = ["--no-cache-dir"]
    if layer.get("index_url"):
        flags.append(f"--index-url {shell_quote(layer['index_url'])}")
    for url in layer.get("extra_index_urls") or ():
        flags.append(f"--extra-index-url {shell_quote(url)}")
    if layer.get("pre"):
        flags.append("--pre")
    if layer.get("extra_args"):
        flags.append(str(layer["extra_args"]))
    return flags
