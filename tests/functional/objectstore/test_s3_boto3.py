"""The S3 API under /s3 through boto3 (SigV4, Keystone EC2 credentials)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud

from .proxyfixture import Account, token_and_project

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def oscloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-oss3-"))
    c = start_cloud(state, services=["identity", "objectstore"])
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def s3_client(cloud, name="demo"):
    import boto3
    from botocore.config import Config

    creds = cloud.osc("ec2 credentials create", cloud=name)
    return boto3.client("s3", endpoint_url=f"{cloud.url}/s3", aws_access_key_id=creds["access"],
                        aws_secret_access_key=creds["secret"], region_name="RegionOne",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_buckets_objects_listing_copy_delete(oscloud, tmp_path):
    from botocore.exceptions import ClientError

    s3 = s3_client(oscloud)
    b = f"b-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    assert b in [x["Name"] for x in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=b)
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=b)
    assert exc.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"

    body = os.urandom(100_000)
    put = s3.put_object(Bucket=b, Key="dir/a.bin", Body=body, Metadata={"color": "red"},
                        ContentType="application/x-test")
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    for k in ("dir/b.txt", "top.txt", "sp ace+plus.txt"):
        s3.put_object(Bucket=b, Key=k, Body=k.encode())
    got = s3.get_object(Bucket=b, Key="dir/a.bin")
    assert got["Body"].read() == body and got["Metadata"] == {"color": "red"}
    assert got["ContentType"] == "application/x-test"
    part = s3.get_object(Bucket=b, Key="dir/a.bin", Range="bytes=10-19")
    assert part["Body"].read() == body[10:20] and part["ContentRange"] == "bytes 10-19/100000"
    head = s3.head_object(Bucket=b, Key="top.txt")
    assert head["ContentLength"] == 7
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=b, Key="missing")
    assert exc.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=b, Key="missing")
    assert exc.value.response["Error"]["Code"] == "404"

    listing = s3.list_objects_v2(Bucket=b)
    assert [o["Key"] for o in listing["Contents"]] == ["dir/a.bin", "dir/b.txt", "sp ace+plus.txt",
                                                       "top.txt"]
    delim = s3.list_objects_v2(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in delim["CommonPrefixes"]] == ["dir/"]
    assert [o["Key"] for o in delim["Contents"]] == ["sp ace+plus.txt", "top.txt"]
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=b, PaginationConfig={"PageSize": 2}))
    assert [o["Key"] for p in pages for o in p["Contents"]] == [o["Key"] for o in listing["Contents"]]
    assert len(pages) == 2
    v1 = s3.list_objects(Bucket=b, Prefix="dir/")
    assert [o["Key"] for o in v1["Contents"]] == ["dir/a.bin", "dir/b.txt"]

    s3.copy_object(Bucket=b, Key="copy.bin", CopySource={"Bucket": b, "Key": "dir/a.bin"})
    assert s3.get_object(Bucket=b, Key="copy.bin")["Body"].read() == body

    path = tmp_path / "up.bin"
    path.write_bytes(os.urandom(300_000))
    s3.upload_file(str(path), b, "up.bin")
    s3.download_file(b, "up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == path.read_bytes()

    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=b)
    assert exc.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_object(Bucket=b, Key="missing")  # 204 even when absent
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]]
    result = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in keys]})
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted(keys)
    s3.delete_bucket(Bucket=b)
    assert b not in [x["Name"] for x in s3.list_buckets()["Buckets"]]
    # the same data is the Swift account of the project
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=b)


def test_bad_signature_and_other_project_refused(oscloud):
    import boto3
    from botocore.exceptions import ClientError

    s3 = s3_client(oscloud)
    b = f"p-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"v")
    # the bucket is a container of the demo account, visible over Swift
    token, project = token_and_project(oscloud, "demo")
    acct = Account(oscloud, token, project)
    assert acct.request("GET", f"/{b}/k").content == b"v"
    acct.close()
    creds = oscloud.osc("ec2 credentials create", cloud="demo")
    forged = boto3.client("s3", endpoint_url=f"{oscloud.url}/s3", aws_access_key_id=creds["access"],
                          aws_secret_access_key="wrong", region_name="RegionOne")
    with pytest.raises(ClientError) as exc:
        forged.list_buckets()
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    admin = s3_client(oscloud, "admin")
    # admin's EC2 credential is scoped to project admin: demo's bucket is not in its account
    with pytest.raises(ClientError) as exc:
        admin.get_object(Bucket=b, Key="k")
    assert exc.value.response["Error"]["Code"] in ("NoSuchBucket", "NoSuchKey")
    s3.delete_object(Bucket=b, Key="k")
    s3.delete_bucket(Bucket=b)


def test_multipart_upload_complete_abort_and_too_small(oscloud, tmp_path):
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import ClientError

    s3 = s3_client(oscloud)
    b = f"m-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    data = os.urandom(12 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    s3.upload_file(str(path), b, "big.bin",
                   Config=TransferConfig(multipart_threshold=5 * 1024 * 1024,
                                         multipart_chunksize=5 * 1024 * 1024))
    head = s3.head_object(Bucket=b, Key="big.bin")
    assert head["ContentLength"] == len(data)
    s3.download_file(b, "big.bin", str(tmp_path / "back.bin"))
    assert hashlib.md5((tmp_path / "back.bin").read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
    part = s3.get_object(Bucket=b, Key="big.bin", Range=f"bytes={5 * 1024 * 1024 - 3}-{5 * 1024 * 1024 + 2}")
    assert part["Body"].read() == data[5 * 1024 * 1024 - 3:5 * 1024 * 1024 + 3]
    assert [x["Name"] for x in s3.list_buckets()["Buckets"]].count(b + "+segments") == 0

    # parts below 5 MiB (but the last) are refused; an aborted upload leaves nothing
    up = s3.create_multipart_upload(Bucket=b, Key="small")
    e1 = s3.upload_part(Bucket=b, Key="small", UploadId=up["UploadId"], PartNumber=1, Body=b"a")["ETag"]
    e2 = s3.upload_part(Bucket=b, Key="small", UploadId=up["UploadId"], PartNumber=2, Body=b"b")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=b, Key="small", UploadId=up["UploadId"], MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert exc.value.response["Error"]["Code"] == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=b, Key="small", UploadId=up["UploadId"])
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=b, Key="small", UploadId=up["UploadId"], PartNumber=3, Body=b"c")
    assert exc.value.response["Error"]["Code"] == "NoSuchUpload"
    token, project = token_and_project(oscloud, "demo")
    acct = Account(oscloud, token, project)
    try:
        left = acct.request("GET", f"/{b}+segments?prefix=small")
        assert left.status_code == 204
        s3.delete_object(Bucket=b, Key="big.bin")  # takes its parts with it
        assert acct.request("GET", f"/{b}+segments").status_code == 204
    finally:
        acct.close()
    s3.delete_bucket(Bucket=b)


def test_tampered_body_refused(oscloud):
    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    s3 = s3_client(oscloud)
    b = f"h-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    creds = oscloud.osc("ec2 credentials create", cloud="demo")
    url = f"{oscloud.url}/s3/{b}/k"
    request = AWSRequest(method="PUT", url=url, data=b"the signed body",
                         headers={"x-amz-content-sha256": hashlib.sha256(b"the signed body").hexdigest()})
    SigV4Auth(Credentials(creds["access"], creds["secret"]), "s3", "RegionOne").add_auth(request)
    headers = dict(request.headers.items())
    r = httpx.put(url, content=b"a different body", headers=headers)
    assert r.status_code == 400 and b"XAmzContentSHA256Mismatch" in r.content
    r = httpx.put(url, content=b"the signed body", headers=headers)
    assert r.status_code == 200
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"the signed body"
    s3.delete_object(Bucket=b, Key="k")
    s3.delete_bucket(Bucket=b)
