"""A local Flyte control plane for deploy tests, on loopback.

It serves flyteidl2's own connect-protocol server classes (TaskService,
AppService, DataProxyService and ClusterService) with uvicorn, so the SDK's real client
and real messages are exercised. CreateUploadLocation signs PUT URLs into a
bucket on moto's S3 server. Every request is recorded in order; `fail_envs`
makes DeployTask fail for the tasks of the named environments (a fault).
AppService keeps apps by (project, domain, name) as a backend does: Create
refuses an existing one (ALREADY_EXISTS), Update bumps its revision.

For task executions it also serves QueueService and StateService, the two a
running parent task talks to (flyte's remote controller): `EnqueueAction`
records the child action and hands it to `on_enqueue` (a test's runner, in a
thread of its own), and `Watch` streams to the parent the sentinel and then
each child's terminal state once the runner calls `finish(...)`.

    cp = ControlPlane.start()      # None when uvicorn or moto is missing
    cp.endpoint                    # "http://127.0.0.1:PORT"
    cp.calls                       # [(method, message), ...]
    cp.stop()

With `auth=Auth(...)` (and `tls=` a tests.support.tls certificate: flyte
sends credentials only over TLS) every call must carry a valid bearer token
in `authorization`, as a Flyte backend with auth demands: the server answers
UNAUTHENTICATED otherwise. It serves AuthMetadataService (the OAuth2 metadata
flyte's client asks for) and an OAuth2 token endpoint on a second loopback
port, which issues tokens for the client credentials it knows. What it
received is recorded (`auth_seen`, `token_requests`) for the tests to assert.
"""

from __future__ import annotations

import base64
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

BUCKET = "flyte-data"
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> tuple[bool, str]:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
        import uvicorn  # noqa: F401
        from flyteidl2.task import task_service_connect  # noqa: F401
    except ImportError as exc:
        return False, f"the local control plane needs uvicorn, moto[server], boto3 and flyteidl2: {exc}"
    return True, ""


@dataclass
class Auth:
    """What the server accepts: client id -> secret (client credentials, API
    keys), bearer tokens minted elsewhere (external command), and the proxy
    token a proxy in front of it would demand (None: no proxy check)."""

    clients: dict = field(default_factory=dict)
    static_tokens: set = field(default_factory=set)
    proxy_token: str | None = None
    scopes: tuple = ("all",)


def _serve(app, port: int, **ssl) -> tuple:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off", **ssl)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread


@dataclass
class ControlPlane:
    endpoint: str
    s3_endpoint: str
    calls: list = field(default_factory=list)
    fail_envs: set = field(default_factory=set)
    tasks: dict = field(default_factory=dict)  # (project, domain, name, version) -> TaskSpec
    auth: Auth | None = None
    auth_seen: list = field(default_factory=list)  # (method, authorization, proxy-authorization) per call
    token_requests: list = field(default_factory=list)  # {"client_id", "accepted", "grant_type", "scope"}
    issued: set = field(default_factory=set)  # tokens the token endpoint issued
    token_endpoint: str | None = None
    apps: dict = field(default_factory=dict)  # (project, domain, name) -> App
    on_enqueue: object = None  # callable(EnqueueActionRequest), run in a thread per action
    updates: list = field(default_factory=list)  # (run name, parent action name, ActionUpdate)
    _lock: object = field(default_factory=threading.Lock)
    _server: object = None
    _moto: object = None
    _thread: object = None
    _token_server: tuple | None = None

    # -- what tests read --------------------------------------------------
    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    def deployed(self) -> list:
        """DeployTask requests that succeeded, in arrival order."""
        return [req for m, req in self.calls if m == "DeployTask" and req.spec.environment.name not in self.fail_envs]

    def enqueued(self) -> list:
        """EnqueueAction requests (child actions enqueued by running tasks), in arrival order."""
        return [req for m, req in self.calls if m == "EnqueueAction"]

    def finish(self, req, output_uri: str = "", error: str | None = None) -> None:
        """Report the enqueued action `req` terminal to the parent's Watch stream."""
        from flyteidl2.common import phase_pb2
        from flyteidl2.workflow import state_service_pb2

        update = state_service_pb2.ActionUpdate(
            action_id=req.action_id, output_uri=output_uri,
            phase=phase_pb2.ACTION_PHASE_FAILED if error else phase_pb2.ACTION_PHASE_SUCCEEDED,
        )
        if error:
            update.error.message = error
        with self._lock:
            self.updates.append((req.action_id.run.name, req.parent_action_name, update))

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, **CREDS)

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    def start(cls, auth: Auth | None = None, tls=None) -> "ControlPlane":
        import boto3
        from moto.server import ThreadedMotoServer

        s3_port = _free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        moto.start()
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        boto3.client("s3", endpoint_url=s3_endpoint, **CREDS).create_bucket(Bucket=BUCKET)
        port = _free_port()
        scheme = "https" if tls else "http"
        cp = cls(endpoint=f"{scheme}://127.0.0.1:{port}", s3_endpoint=s3_endpoint, _moto=moto, auth=auth)
        if auth is not None:
            token_port = _free_port()
            # plain HTTP on loopback: flyte's token requests use its own HTTP
            # session, which verifies TLS with the default trust store, not
            # admin.caCertFilePath (flyte 2.12), so a test CA cannot serve it
            cp.token_endpoint = f"http://127.0.0.1:{token_port}/oauth2/token"
            cp._token_server = _serve(cp._token_app(), token_port)
        ssl = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)} if tls else {}
        cp._server, cp._thread = _serve(cp._app(), port, **ssl)
        return cp

    def stop(self) -> None:
        for pair in (self._token_server, (self._server, self._thread)):
            if pair and pair[0] is not None:
                pair[0].should_exit = True
                pair[1].join(10)
        if self._moto is not None:
            self._moto.stop()

    # -- the services --------------------------------------------------------
    def _app(self):
        from connectrpc.code import Code
        from connectrpc.errors import ConnectError
        from flyteidl2.cluster import payload_pb2 as cluster_pb2
        from flyteidl2.cluster.service_connect import ClusterService, ClusterServiceASGIApplication
        from flyteidl2.dataproxy import dataproxy_service_pb2 as dp_pb2
        from flyteidl2.dataproxy.dataproxy_service_connect import DataProxyService, DataProxyServiceASGIApplication
        from flyteidl2.app import app_payload_pb2
        from flyteidl2.app.app_service_connect import AppService, AppServiceASGIApplication
        from flyteidl2.task import task_service_pb2
        from flyteidl2.task.task_service_connect import TaskService, TaskServiceASGIApplication
        from flyteidl2.workflow import queue_service_pb2, state_service_pb2
        from flyteidl2.workflow.queue_service_connect import QueueService, QueueServiceASGIApplication
        from flyteidl2.workflow.state_service_connect import StateService, StateServiceASGIApplication

        cp = self
        lock = threading.Lock()

        def record(method, req, ctx=None):
            with lock:
                cp.calls.append((method, req))
            if cp.auth is not None:
                headers = ctx.request_headers()
                authz, proxy = headers.get("authorization"), headers.get("proxy-authorization")
                with lock:
                    cp.auth_seen.append((method, authz, proxy))
                token = authz[len("Bearer "):] if authz and authz.startswith("Bearer ") else None
                if token is None or (token not in cp.issued and token not in cp.auth.static_tokens):
                    raise ConnectError(Code.UNAUTHENTICATED, "missing or unknown bearer token")
                if cp.auth.proxy_token is not None and proxy != f"Bearer {cp.auth.proxy_token}":
                    raise ConnectError(Code.UNAUTHENTICATED, "missing or unknown proxy token")

        # subclasses of the generated protocols: every other method answers UNIMPLEMENTED
        class Tasks(TaskService):
            async def deploy_task(self, req, ctx):
                record("DeployTask", req, ctx)
                if req.spec.environment.name in cp.fail_envs:
                    raise ConnectError(Code.INTERNAL, f"injected fault for environment {req.spec.environment.name}")
                tid = req.task_id
                key = (tid.project, tid.domain, tid.name, tid.version)
                with lock:
                    if key in cp.tasks:
                        raise ConnectError(Code.ALREADY_EXISTS, f"task {tid.name} version {tid.version} exists")
                    cp.tasks[key] = req.spec
                return task_service_pb2.DeployTaskResponse()

        class Apps(AppService):
            @staticmethod
            def _key(app_id):
                return (app_id.project, app_id.domain, app_id.name)

            async def create(self, req, ctx):
                record("CreateApp", req, ctx)
                key = self._key(req.app.metadata.id)
                with lock:
                    if key in cp.apps:
                        raise ConnectError(Code.ALREADY_EXISTS, f"app {key[2]} exists")
                    app = type(req.app)()
                    app.CopyFrom(req.app)
                    app.metadata.revision = 1
                    cp.apps[key] = app
                return app_payload_pb2.CreateResponse(app=app)

            async def get(self, req, ctx):
                record("GetApp", req, ctx)
                with lock:
                    app = cp.apps.get(self._key(req.app_id))
                if app is None:
                    raise ConnectError(Code.NOT_FOUND, f"app {req.app_id.name} not found")
                return app_payload_pb2.GetResponse(app=app)

            async def update(self, req, ctx):
                record("UpdateApp", req, ctx)
                key = self._key(req.app.metadata.id)
                with lock:
                    old = cp.apps.get(key)
                    if old is None:
                        raise ConnectError(Code.NOT_FOUND, f"app {key[2]} not found")
                    if req.app.metadata.revision != old.metadata.revision:
                        raise ConnectError(Code.ABORTED, f"app {key[2]}: stale revision {req.app.metadata.revision}")
                    app = type(req.app)()
                    app.CopyFrom(req.app)
                    app.metadata.revision = old.metadata.revision + 1
                    cp.apps[key] = app
                return app_payload_pb2.UpdateResponse(app=app)

        class DataProxy(DataProxyService):
            async def create_upload_location(self, req, ctx):
                record("CreateUploadLocation", req, ctx)
                root = req.filename_root or req.content_md5.hex()
                key = "/".join(p for p in (req.project, req.domain, root, req.filename) if p)
                url = cp.s3().generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600)
                return dp_pb2.CreateUploadLocationResponse(signed_url=url, native_url=f"s3://{BUCKET}/{key}")

        class Clusters(ClusterService):
            async def select_cluster(self, req, ctx):
                # no per-cluster endpoint: the control plane itself serves data-proxy calls
                record("SelectCluster", req, ctx)
                return cluster_pb2.SelectClusterResponse()

        class Queue(QueueService):
            async def enqueue_action(self, req, ctx):
                record("EnqueueAction", req, ctx)
                if cp.on_enqueue is not None:
                    threading.Thread(target=cp.on_enqueue, args=(req,), daemon=True).start()
                return queue_service_pb2.EnqueueActionResponse()

        class State(StateService):
            async def watch(self, req, ctx):
                import asyncio

                record("Watch", req, ctx)
                run, parent = req.parent_action_id.run.name, req.parent_action_id.name
                # the informer waits for the sentinel before it trusts its cache
                yield state_service_pb2.WatchResponse(control_message=state_service_pb2.ControlMessage(sentinel=True))
                sent = 0
                while True:
                    with cp._lock:
                        mine = [u for r, p, u in cp.updates if r == run and p == parent]
                    for update in mine[sent:]:
                        yield state_service_pb2.WatchResponse(action_update=update)
                    sent = len(mine)
                    await asyncio.sleep(0.2)

        from flyteidl2.auth import auth_service_pb2 as auth_pb2
        from flyteidl2.auth.auth_service_connect import AuthMetadataService, AuthMetadataServiceASGIApplication

        class AuthMetadata(AuthMetadataService):
            # unauthenticated, as on a real backend: it tells the client where to get a token
            async def get_o_auth2_metadata(self, req, ctx):
                base = cp.endpoint
                return auth_pb2.GetOAuth2MetadataResponse(
                    issuer=base, token_endpoint=cp.token_endpoint or "", authorization_endpoint=f"{base}/oauth2/authorize",
                    device_authorization_endpoint=f"{base}/oauth2/device", grant_types_supported=["client_credentials"])

            async def get_public_client_config(self, req, ctx):
                scopes = list(cp.auth.scopes) if cp.auth else []
                return auth_pb2.GetPublicClientConfigResponse(
                    client_id="flytectl", redirect_uri="http://localhost:53593/callback", scopes=scopes,
                    authorization_metadata_key="authorization")

        apps = {
            "/flyteidl2.auth.AuthMetadataService/": AuthMetadataServiceASGIApplication(AuthMetadata()),
            "/flyteidl2.workflow.QueueService/": QueueServiceASGIApplication(Queue()),
            "/flyteidl2.workflow.StateService/": StateServiceASGIApplication(State()),
            "/flyteidl2.task.TaskService/": TaskServiceASGIApplication(Tasks()),
            "/flyteidl2.app.AppService/": AppServiceASGIApplication(Apps()),
            "/flyteidl2.dataproxy.DataProxyService/": DataProxyServiceASGIApplication(DataProxy()),
            "/flyteidl2.cluster.ClusterService/": ClusterServiceASGIApplication(Clusters()),
        }

        async def app(scope, receive, send):
            path = scope.get("path", "")
            for prefix, sub in apps.items():
                if path.startswith(prefix):
                    return await sub(scope, receive, send)
            record("UNROUTED " + path, None)
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"not found"})

        return app

    def _token_app(self):
        """The OAuth2 token endpoint: client credentials in HTTP basic auth."""
        import json

        cp = self

        async def app(scope, receive, send):
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            form = dict(urllib.parse.parse_qsl(body.decode()))
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            client_id, given = None, None
            authz = headers.get("authorization", "")
            if authz.startswith("Basic "):
                try:
                    client_id, quoted = base64.b64decode(authz[6:]).decode().split(":", 1)
                    given = urllib.parse.unquote_plus(quoted)
                except ValueError:
                    pass
            ok = client_id is not None and cp.auth.clients.get(client_id) == given
            cp.token_requests.append({"client_id": client_id, "accepted": ok, "grant_type": form.get("grant_type"),
                                      "scope": form.get("scope")})
            if ok:
                token = "tok-" + secrets.token_hex(8)
                cp.issued.add(token)
                status, doc = 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
            else:
                status, doc = 401, {"error": "invalid_client"}
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(doc).encode()})

        return app
