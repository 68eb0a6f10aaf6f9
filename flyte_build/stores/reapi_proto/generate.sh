#!/usr/bin/env bash
# Regenerate the Python modules of this folder from the .proto files under src/
# (see README.md for where those come from). Reproducible: a pinned grpcio-tools
# in a throw-away venv, the same inputs, and the same import rewrite.
#
#   bash flyte_build/stores/reapi_proto/generate.sh
#
# The generated modules import google.api, google.longrunning and google.rpc
# from googleapis-common-protos (a dependency of flyteidl2 and grpcio-status);
# protoc only needs their .proto files, taken from that same installed package.
set -euo pipefail

readonly GRPCIO_TOOLS="grpcio-tools==1.72.1"
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT

"${python}" -m venv "${work}/venv"
"${work}/venv/bin/pip" install -q "${GRPCIO_TOOLS}" "googleapis-common-protos>=1.63"
common=$("${work}/venv/bin/python" -c 'import google.api.annotations_pb2 as m, os; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')

# googleapis-common-protos ships google/longrunning/operations.proto as
# operations_proto.proto (its Python module google.longrunning.operations_pb2
# is still the descriptor "google/longrunning/operations.proto")
mkdir -p "${work}/include/google/longrunning" "${work}/out"
cp "${common}/google/longrunning/operations_proto.proto" "${work}/include/google/longrunning/operations.proto"

cd "${here}/src"
"${work}/venv/bin/python" -m grpc_tools.protoc -I . -I "${work}/include" -I "${common}" \
    --python_out="${work}/out" --grpc_python_out="${work}/out" \
    build/bazel/semver/semver.proto \
    build/bazel/remote/execution/v2/remote_execution.proto \
    google/bytestream/bytestream.proto

# One flat package: the modules import each other relatively, so nothing named
# `build` or `google.bytestream` is added to the interpreter's top level.
out="${work}/out"
cp "${out}/build/bazel/semver/semver_pb2.py" \
   "${out}/build/bazel/remote/execution/v2/remote_execution_pb2.py" \
   "${out}/build/bazel/remote/execution/v2/remote_execution_pb2_grpc.py" \
   "${out}/google/bytestream/bytestream_pb2.py" \
   "${out}/google/bytestream/bytestream_pb2_grpc.py" \
   "${here}/"
sed -i -E \
    -e 's/^from build\.bazel\.semver import semver_pb2/from . import semver_pb2/' \
    -e 's/^from build\.bazel\.remote\.execution\.v2 import remote_execution_pb2/from . import remote_execution_pb2/' \
    -e 's/^from google\.bytestream import bytestream_pb2/from . import bytestream_pb2/' \
    "${here}"/*_pb2.py "${here}"/*_pb2_grpc.py
echo "generated $(ls "${here}"/*_pb2*.py | wc -l) modules in ${here}"
