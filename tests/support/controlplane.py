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
"""

from __future__ import annotations

import socket
import threading
import time
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
class ControlPlane:
    endpoint: str
    s3_endpoint: str
    calls: list = field(default_factory=list)
    fail_envs: set = field(default_factory=set)
    tasks: dict = field(default_factory=dict)  # (project, domain, name, version) -> TaskSpec
    apps: dict = field(default_factory=dict)  # (project, domain, name) -> App
    on_enqueue: object = None  # callable(EnqueueActionRequest), run in a thread per action
    updates: list = field(default_factory=list)  # (run name, parent action name, ActionUpdate)
    _lock: object = field(default_factory=threading.Lock)
    _server: object = None
    _moto: object = None
    _thread: object = None

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
    def start(cls) -> "ControlPlane":
        import boto3
        import uvicorn
        from moto.server import ThreadedMotoServer

        s3_port = _free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        moto.start()
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        boto3.client("s3", endpoint_url=s3_endpoint, **CREDS).create_bucket(Bucket=BUCKET)
        port = _free_port()
        cp = cls(endpoint=f"http://127.0.0.1:{port}", s3_endpoint=s3_endpoint, _moto=moto)
        config = uvicorn.Config(cp._app(), host="127.0.0.1", port=port, log_level="error", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        cp._server, cp._thread = server, thread
        return cp

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)
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

        def record(method, req):
            with lock:
                cp.calls.append((method, req))

        # subclasses of the generated protocols: every other method answers UNIMPLEMENTED
        class Tasks(TaskService):
            async def deploy_task(self, req, ctx):
                record("DeployTask", req)
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
                record("CreateApp", req)
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
                record("GetApp", req)
                with lock:
                    app = cp.apps.get(self._key(req.app_id))
                if app is None:
                    raise ConnectError(Code.NOT_FOUND, f"app {req.app_id.name} not found")
                return app_payload_pb2.GetResponse(app=app)

            async def update(self, req, ctx):
                record("UpdateApp", req)
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
                record("CreateUploadLocation", req)
                root = req.filename_root or req.content_md5.hex()
                key = "/".join(p for p in (req.project, req.domain, root, req.filename) if p)
                url = cp.s3().generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600)
                return dp_pb2.CreateUploadLocationResponse(signed_url=url, native_url=f"s3://{BUCKET}/{key}")

        class Clusters(ClusterService):
            async def select_cluster(self, req, ctx):
                # no per-cluster endpoint: the control plane itself serves data-proxy calls
                record("SelectCluster", req)
                return cluster_pb2.SelectClusterResponse()

        class Queue(QueueService):
            async def enqueue_action(self, req, ctx):
                record("EnqueueAction", req)
                if cp.on_enqueue is not None:
                    threading.Thread(target=cp.on_enqueue, args=(req,), daemon=True).start()
                return queue_service_pb2.EnqueueActionResponse()

        class State(StateService):
            async def watch(self, req, ctx):
                import asyncio

                record("Watch", req)
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

        apps = {
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
