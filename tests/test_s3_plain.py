"""S3 reads over the standard library's HTTP client (`stores.s3_plain`, signed
by `stores.sigv4` exactly as botocore's signer signs): the same answers as botocore's client on a
real (moto) server, botocore left to every setting it alone knows, and a
fresh machine that only reads never makes a botocore client."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flyte_build.config.settings import StoreOptions
from flyte_build.stores import s3_plain
from flyte_build.stores.s3_reads import S3Reads
from tests.support import servers
from tests.support.cli import build_json, copy_sample, digests
from tests.support.requirements import require

KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "AWS_DEFAULT_REGION": "eu-west-3"}


def test_settings_only_botocore_knows_are_left_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert s3_plain.settings({}, KEYS) is not None
    assert s3_plain.settings({"profile": "ci"}, KEYS) is None  # a named profile: its files decide
    assert s3_plain.settings({}, {**KEYS, "AWS_PROFILE": "ci"}) is None
    assert s3_plain.settings({}, {**KEYS, "AWS_USE_FIPS_ENDPOINT": "true"}) is None
    assert s3_plain.settings({}, {k: v for k, v in KEYS.items() if k != "AWS_DEFAULT_REGION"}) is None  # no region
    assert s3_plain.settings({}, {"AWS_DEFAULT_REGION": "eu-west-3"}) is None  # the credential chain: botocore's
    assert s3_plain.settings({"anon": True}, {"AWS_DEFAULT_REGION": "eu-west-3"}).key is None
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text("[default]\nregion = us-west-2\n")
    assert s3_plain.settings({}, KEYS) is None  # a config file may set anything
    with pytest.raises(s3_plain.Fallback):  # AWS's own endpoint with a dotted bucket: path style, botocore's rules
        s3_plain._uri_path(s3_plain.Plain("https", "s3.eu-west-3.amazonaws.com", "", True, "eu-west-3", "k", "s", None),
                           "my.bucket", "x")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEXAMPLE//token+/="])
def test_signatures_are_botocores_header_for_header(monkeypatch, token):
    import datetime

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    cases = [("GET", "s3.eu-west-3.amazonaws.com", "my-bucket", "cas/ab/" + "ab" * 32, {}),
             ("GET", "127.0.0.1:5000", "b", "a key+é~.json", {"Range": "bytes=3-49999"}),
             ("HEAD", "minio.internal", "ci-cache", "", {}),
             ("GET", "s3.us-east-1.amazonaws.com", "ci-bkt", "dir/with  spaces/x", {"range": "  bytes=0-9  ", "X-Amz-Meta-Note": "two   spaces"})]
    for when in (datetime.datetime(2026, 12, 8, 1, 2, 3), datetime.datetime(2031, 2, 28, 23, 59, 59)):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda when=when: when)
        now = when.replace(tzinfo=datetime.timezone.utc).timestamp()
        for method, endpoint, bucket, key, headers in cases:
            virtual = endpoint.endswith("amazonaws.com")
            p = s3_plain.Plain("https" if virtual else "http", endpoint, "", virtual, "eu-west-3",
                               KEYS["AWS_ACCESS_KEY_ID"], KEYS["AWS_SECRET_ACCESS_KEY"], token)
            host, path = s3_plain._uri_path(p, bucket, key)
            ours = s3_plain.sigv4.sign(method, path, {**headers, "host": host}, access_key=p.key, secret_key=p.secret,
                                       token=token, region=p.region, now=now)
            req = AWSRequest(method=method, url=f"{p.scheme}://{host}{path}", headers={**headers, "host": host})
            req.context["payload_signing_enabled"] = True
            botocore.auth.S3SigV4Auth(Credentials(p.key, p.secret, token), "s3", p.region).add_auth(req)
            theirs = {k.lower(): v for k, v in req.headers.items()}
            assert ours == theirs, (method, endpoint, key)
            assert ours["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={p.key}/{when:%Y%m%d}/eu-west-3/s3/")


@pytest.fixture(scope="module")
def moto_bucket():
    endpoint = servers.s3_bucket("plain-reads")
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    objects = {"empty": b"", "small.json": b'{"a": 1}', "big/blob": os.urandom(100_000), "a key+é~.json": b"odd name"}
    for k, v in objects.items():
        s3.put_object(Bucket="plain-reads", Key=k, Body=v)
    return endpoint, objects


@pytest.mark.servers
def test_reads_answer_as_botocore_answers(moto_bucket, monkeypatch):
    endpoint, objects = moto_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for k, v in servers.S3_ENV.items():
        monkeypatch.setenv(k, v)
    plain, boto = S3Reads(StoreOptions(), 30.0), S3Reads(StoreOptions(), 30.0)
    boto.plain = None
    assert plain.plain is not None
    for name, data in objects.items():
        for reader in (plain, boto):
            assert reader.size("plain-reads", name) == len(data)
            for start, end in ((0, len(data) + 1), (0, 10), (3, 50_000), (len(data), len(data) + 5)):
                got = reader.get_range("plain-reads", name, start, end)
                assert got == (data[start:end], len(data)), (name, start, end, reader is plain)
    for reader in (plain, boto):
        reader.bucket_exists("plain-reads")
        with pytest.raises(FileNotFoundError):
            reader.bucket_exists("no-such-bucket")
        with pytest.raises(FileNotFoundError):
            reader.get_range("plain-reads", "missing", 0, 10)
        with pytest.raises(FileNotFoundError):
            reader.size("no-such-bucket", "x")
    assert plain.plain is not None, "a plain read was handed to botocore"
    assert "botocore" in sys.modules  # (this test imported it for the reference reader)


@pytest.mark.servers
def test_a_server_that_checks_signatures_accepts_ours_and_refuses_a_wrong_secret():
    """moto's server checks SigV4 signatures once IAM users exist: ours must pass
    it for the keys flyte-build reads (hex digests under directories) and the
    other characters this checker gets right, and a wrong secret must not."""
    import boto3

    endpoint = servers.s3_server_checking_signatures(unchecked=3)
    require(endpoint is not None, "moto's S3 server (pip install 'moto[server]')")
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                       aws_secret_access_key="setup")
    iam.create_user(UserName="ci")  # the three unchecked actions
    iam.put_user_policy(UserName="ci", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="ci")["AccessKey"]
    env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
           "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket="signed-reads")
    names = ["cas/sha256/ab/" + "ab" * 32, "ac/cd/" + "cd" * 32 + ".json", "a key.json", "tilde~.json", "a-b_c.d"]
    for name in names:
        s3.put_object(Bucket="signed-reads", Key=name, Body=name.encode())

    wrong = s3_plain.Client(s3_plain.settings({"endpoint-url": endpoint}, {**env, "AWS_SECRET_ACCESS_KEY": "wrong"}), 10)
    with pytest.raises(s3_plain.Fallback, match="HTTP 403"):  # the server does check
        wrong.request("GET", "signed-reads", names[0], limit=1000)
    ours = s3_plain.Client(s3_plain.settings({"endpoint-url": endpoint}, env), 10)
    for name in names:
        status, headers, body = ours.request("GET", "signed-reads", name, limit=1000)
        assert (status, body) == (200, name.encode()), name
        assert ours.request("HEAD", "signed-reads", name)[1]["content-length"] == str(len(name.encode()))
    assert ours.request("GET", "signed-reads", "cas/missing", limit=10)[0] == 404


PROBE = (
    "import json, sys\n"
    "from flyte_build.workspace import Settings, Workspace\n"
    "ws = Workspace(Settings(cache=sys.argv[1]))\n"
    "res = ws.build()\n"
    "print(json.dumps({'how': ws.discovery.how, 'digests': {r.target: r.digest for r in res},\n"
    "  'sources': sorted({str(r.source) for r in res}), 'botocore': sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'aiobotocore', 'urllib3'))}))\n"
)


@pytest.mark.servers
@pytest.mark.timeout(300)
def test_a_fresh_machine_reading_s3_never_makes_a_botocore_client(tmp_path):
    from flyte_build.stores.signing import keygen

    endpoint = servers.s3_bucket("flyte-cache")
    private, public = keygen()
    env = {**servers.S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    url = f"s3://flyte-cache/plain-{os.getpid()}"
    first = build_json(copy_sample(tmp_path / "a"), tmp_path / "cache-a", "--cache", url,
                       env={**env, "FLYTE_BUILD_CACHE_SIGNING_KEY": private})
    proc = subprocess.run([sys.executable, "-c", PROBE, url], cwd=copy_sample(tmp_path / "b"), capture_output=True,
                          text=True, timeout=240, env={**os.environ, **env, "FLYTE_BUILD_CACHE_DIR": str(tmp_path / "cache-b"),
                                                       "FLYTE_BUILD_CACHE_VERIFY_KEYS": public, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["how"] == "shared" and got["sources"] == ["shared"]
    assert got["digests"] == digests(first)
    assert got["botocore"] == []  # no botocore module at all: `sigv4` signs
