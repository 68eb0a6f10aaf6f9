"""flyte's own configuration (its config file, FLYTE_* variables, FLYTE_API_KEY)
and the client for the control plane that deploys talk to."""

from __future__ import annotations

import os
from pathlib import Path

from .serialization import task_spec_message


# -- flyte's own configuration ---------------------------------------------------
#
# Values come from flyte's loader (`flyte.config.auto`: the YAML file, with the
# FLYTE_* variables over it) and FLYTE_API_KEY as the `flyte` CLI reads it;
# each with where it came from. Secrets are returned as they are: callers mask
# them (`flyte_config.mask`) before anything is shown or recorded.

SECRET_SETTINGS = ("client_secret", "api_key")


def _entry_source(entry, path: str) -> str | None:
    """"$VAR" when an environment variable set it, "FILE: key" when the file did, else None."""
    ye = entry.yaml_entry
    for name in ye.env_names():
        if name in os.environ:
            return f"${name}"
    from flyte.config._reader import get_config_file

    if ye.read_from_file(get_config_file(path), entry.transform) is not None:
        return f"{path}: {ye.switch}"
    return None


def read_flyte_config(path: str | None) -> dict:
    """{setting: {"value": v, "source": s}} as flyte reads its config file `path`
    (None: no file, so flyte's defaults; flyte then reads no FLYTE_* variable
    either), plus FLYTE_API_KEY as the `flyte` CLI applies it."""
    from flyte.config import _internal as ent

    cfg = _load_flyte_config(path)
    pc, tc, ic = cfg.platform, cfg.task, cfg.image
    out: dict = {}

    def put(name, value, entry=None, source=None):
        if source is None and entry is not None and path is not None:
            source = _entry_source(entry, path)
        out[name] = {"value": value, "source": source or "default"}

    put("endpoint", pc.endpoint, ent.Platform.URL)
    put("insecure", pc.insecure, ent.Platform.INSECURE)
    put("insecure_skip_verify", pc.insecure_skip_verify, ent.Platform.INSECURE_SKIP_VERIFY)
    put("ca_cert_file_path", pc.ca_cert_file_path, ent.Platform.CA_CERT_FILE_PATH)
    secret_src = _client_secret_source(pc, path)
    put("auth_type", pc.auth_mode, ent.Credentials.AUTH_MODE,
        source=f"flyte: a client secret is set ({secret_src})" if secret_src and not _entry_source(ent.Credentials.AUTH_MODE, path) else None)
    put("client_id", pc.client_id, ent.Credentials.CLIENT_ID)
    put("client_secret", pc.client_credentials_secret, source=secret_src)
    put("command", pc.command, ent.Credentials.COMMAND)
    put("proxy_command", pc.proxy_command, ent.Credentials.PROXY_COMMAND)
    put("scopes", list(pc.scopes or []), ent.Credentials.SCOPES)
    put("http_proxy_url", pc.http_proxy_url, ent.Platform.HTTP_PROXY_URL)
    put("disable_keyring", pc.disable_keyring, ent.Platform.DISABLE_KEYRING)
    put("org", tc.org, ent.Task.ORG)
    put("project", tc.project, ent.Task.PROJECT)
    put("domain", tc.domain, ent.Task.DOMAIN)
    put("image_builder", ic.builder, ent.Image.BUILDER)
    put("image_registry", ic.registry, ent.Image.REGISTRY)
    put("image_refs", dict(sorted((ic.image_refs or {}).items())), ent.Image.IMAGE_REFS)
    put("api_key", None)
    _apply_api_key(out)
    return out


def _load_flyte_config(path: str | None):
    """flyte's Config from the file `path` (None: flyte's defaults); a broken or non-YAML file is an error."""
    import flyte.config as fc
    from flyte.config._reader import get_config_file

    if path is None:
        return fc.Config()
    try:
        raw = Path(path).read_text()
        cfg = fc.auto(path)
    except Exception as exc:  # noqa: BLE001 - a broken config (or secret file) is the user's to fix
        raise ValueError(f"flyte config {path}: {type(exc).__name__}: {exc}") from None
    if raw.strip() and get_config_file(path).yaml_config is None:
        # flyte only logs a warning and goes on with defaults; a typo must not deploy elsewhere
        raise ValueError(f"flyte config {path}: not valid YAML")
    return cfg


def _client_secret_source(pc, path: str | None) -> str | None:
    """Where the client secret came from (the env var or the file the config names), if it is set."""
    from flyte.config import _internal as ent
    from flyte.config._reader import get_config_file

    if not (pc.client_credentials_secret and path is not None):
        return None
    env_var = _entry_source(ent.Credentials.CLIENT_CREDENTIALS_SECRET_ENV_VAR, path)
    loc = _entry_source(ent.Credentials.CLIENT_CREDENTIALS_SECRET_LOCATION, path)
    var = ent.Credentials.CLIENT_CREDENTIALS_SECRET_ENV_VAR.read(get_config_file(path))
    if var and os.environ.get(var):
        return f"${var} (named by {env_var})"
    if loc:
        return f"the file named by {loc}"
    return None


def _apply_api_key(out: dict) -> None:
    """FLYTE_API_KEY over the file's settings, as `flyte`'s CLI applies it: the key's
    endpoint unless one is given on the command line, its client id and secret,
    client-secret auth, and its org."""
    api_key = os.environ.get("FLYTE_API_KEY")
    if not api_key:
        return
    from flyte._utils import sanitize_endpoint
    from flyte.remote._client.auth._auth_utils import decode_api_key

    try:
        endpoint, client_id, client_secret, org = decode_api_key(api_key)
    except Exception:  # noqa: BLE001 - never echo the key
        raise ValueError("FLYTE_API_KEY is not an API key flyte can decode (base64 of endpoint:client-id:secret:org)") from None
    src = "$FLYTE_API_KEY"
    out["api_key"] = {"value": api_key, "source": src}
    out["endpoint"] = {"value": sanitize_endpoint(endpoint), "source": src}
    out["client_id"] = {"value": client_id, "source": src}
    out["client_secret"] = {"value": client_secret, "source": src}
    out["auth_type"] = {"value": "ClientSecret", "source": src}
    if org and org != "None":
        out["org"] = {"value": org, "source": src}


DISCOVERY_SETTINGS = ("org", "project", "domain", "image_builder", "image_registry", "image_refs")


def discovery_settings(path: str | None) -> dict:
    """The non-secret part of `read_flyte_config`: what discovery initialises flyte with."""
    got = read_flyte_config(path)
    return {k: got[k] for k in DISCOVERY_SETTINGS}


def auth_type_name(value: str | None) -> str:
    """A `--auth-type` value (any spelling `flyte --auth-type` takes) as flyte's AuthType."""
    import typing

    from flyte.cli._common import sanitize_auth_type
    from flyte.remote._client.auth._client_config import AuthType

    if value in typing.get_args(AuthType):
        return value
    return sanitize_auth_type(value)


def client_kwargs(settings: dict) -> dict:
    """The keyword arguments flyte's own `_initialize_client` takes, from plain
    settings (name -> value), through flyte's PlatformConfig translation."""
    from flyte._initialize import _platform_to_client_kwargs
    from flyte.config._config import PlatformConfig

    pc = PlatformConfig(
        endpoint=settings.get("endpoint"), insecure=bool(settings.get("insecure")),
        insecure_skip_verify=bool(settings.get("insecure_skip_verify")),
        ca_cert_file_path=settings.get("ca_cert_file_path"), command=settings.get("command"),
        proxy_command=settings.get("proxy_command"), client_id=settings.get("client_id"),
        client_credentials_secret=settings.get("client_secret"), scopes=list(settings.get("scopes") or []),
        auth_mode=settings.get("auth_type") or "Pkce", http_proxy_url=settings.get("http_proxy_url"),
        disable_keyring=bool(settings.get("disable_keyring")),
    )
    kw = _platform_to_client_kwargs(pc)
    kw["disable_keyring"] = pc.disable_keyring
    return kw


async def make_client(kwargs: dict):
    """flyte's own client for these settings (its auth interceptors included),
    through the function `flyte.init` uses."""
    from flyte._initialize import _initialize_client

    return await _initialize_client(**kwargs)


def scrub(text: str, secrets) -> str:
    """`text` with every secret replaced, for messages that may quote them."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "********")
    return text


def _is_auth_error(exc: BaseException | None) -> bool:
    """A refusal of the credentials, anywhere in the chain (flyte wraps some, e.g.
    SelectCluster failures, in RuntimeError)."""
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectError) and exc.code in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED):
            return True
        if type(exc).__name__ in ("AuthenticationError", "AccessTokenNotFoundError"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class Backend:
    """The SDK's connect-protocol client for one endpoint, used from one event loop."""

    def __init__(self, endpoint: str, insecure: bool = False, timeout: float = 60.0, client: dict | None = None,
                 secrets: tuple = (), auth: str = ""):
        self.endpoint = endpoint
        self.insecure = insecure
        self.timeout = timeout
        # keyword arguments for flyte's own client (see client_kwargs): auth type, credentials, CA
        self.client_kwargs = dict(client or {"endpoint": endpoint, "insecure": insecure})
        self.secrets = secrets
        self.auth = auth
        self._client = None

    async def _within(self, awaitable, what: str):
        import asyncio
        import time

        started = time.monotonic()
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except Exception as exc:
            # the connect client turns our cancellation into its own "Request was cancelled"
            if time.monotonic() - started >= self.timeout:
                raise TimeoutError(f"{what}: no answer from {self.endpoint} within {self.timeout:g} s") from None
            if _is_auth_error(exc):
                msg = scrub(f"{type(exc).__name__}: {exc}", self.secrets)
                raise PermissionError(f"{what}: {self.endpoint} refused the credentials (auth {self.auth}): {msg}") from None
            if any(x and x in str(exc) for x in self.secrets):
                raise RuntimeError(scrub(f"{type(exc).__name__}: {exc}", self.secrets)) from None
            raise

    async def _clients(self):
        if self._client is None:
            self._client = await self._within(make_client(self.client_kwargs), "connecting to the control plane")
        return self._client

    async def upload_location(self, project: str, domain: str, org: str | None, filename: str, root: str,
                              content_md5: bytes, size: int) -> tuple[str, str, dict]:
        """DataProxy CreateUploadLocation: (signed URL, native URL, extra headers)."""
        from flyteidl2.dataproxy import dataproxy_service_pb2 as dp
        from google.protobuf import duration_pb2

        client = await self._clients()
        expires = duration_pb2.Duration(seconds=3600)
        resp = await self._within(client.dataproxy_service.create_upload_location(dp.CreateUploadLocationRequest(
            project=project, domain=domain, org=org or "", filename=filename, filename_root=root,
            content_md5=content_md5, expires_in=expires, add_content_md5_metadata=True, content_length=size,
        )), "CreateUploadLocation")
        return resp.signed_url, resp.native_url, dict(resp.headers)

    async def deploy_task(self, spec: dict, triggers: list[dict] | tuple = ()) -> str:
        """TaskService DeployTask with the task's triggers; "deployed", or
        "exists" when that version is already registered."""
        from connectrpc.code import Code
        from connectrpc.errors import ConnectError
        from flyteidl2.task import task_definition_pb2, task_service_pb2
        from google.protobuf.json_format import ParseDict

        msg = task_spec_message(spec)
        trigger_msgs = [ParseDict(t, task_definition_pb2.TaskTrigger()) for t in triggers]
        tid = msg.task_template.id
        task_id = task_definition_pb2.TaskIdentifier(org=tid.org, project=tid.project, domain=tid.domain, name=tid.name, version=tid.version)
        client = await self._clients()
        try:
            await self._within(
                client.task_service.deploy_task(task_service_pb2.DeployTaskRequest(task_id=task_id, spec=msg, triggers=trigger_msgs)),
                f"DeployTask {tid.name}",
            )
        except ConnectError as exc:
            if exc.code == Code.ALREADY_EXISTS:
                return "exists"
            raise RuntimeError(f"DeployTask {tid.name}: {exc.code.name.lower()}: {exc.message}") from None
        return "deployed"

    async def deploy_app(self, spec: dict) -> str:
        """AppService Create, as flyte's `App.create` does it: "deployed"; when the app
        exists (ALREADY_EXISTS, or ABORTED), Get it and Update its spec ("updated"),
        unless the spec is the same ("exists")."""
        from connectrpc.code import Code
        from connectrpc.errors import ConnectError
        from flyteidl2.app import app_definition_pb2, app_payload_pb2
        from google.protobuf.json_format import MessageToDict, ParseDict

        app = ParseDict(spec, app_definition_pb2.App())
        name = app.metadata.id.name
        client = await self._clients()
        try:
            try:
                await self._within(client.app_service.create(app_payload_pb2.CreateRequest(app=app)), f"Create app {name}")
                return "deployed"
            except ConnectError as exc:
                if exc.code not in (Code.ALREADY_EXISTS, Code.ABORTED):
                    raise
            got = await self._within(client.app_service.get(app_payload_pb2.GetRequest(app_id=app.metadata.id)), f"Get app {name}")
            current = got.app
            app.spec.creator.CopyFrom(current.spec.creator)
            old, new = MessageToDict(current.spec), MessageToDict(app.spec)
            if not new.get("ingress") and "ingress" in old:
                new["ingress"] = old["ingress"]  # flyte keeps the backend's ingress when none is asked for
            if old == new:
                return "exists"
            updated = app_definition_pb2.App(
                metadata=app_definition_pb2.Meta(id=current.metadata.id, revision=current.metadata.revision,
                                                 labels=app.metadata.labels or current.metadata.labels),
                spec=app.spec, status=current.status,
            )
            await self._within(client.app_service.update(app_payload_pb2.UpdateRequest(
                app=updated, reason="User requested serve from sdk")), f"Update app {name}")
            return "updated"
        except ConnectError as exc:
            raise RuntimeError(f"deploying app {name}: {exc.code.name.lower()}: {exc.message}") from None
