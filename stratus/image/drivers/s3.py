"""Images as objects in any S3-compatible bucket (boto3 in executors).

Uploads become a multipart upload (parts of ``part_size`` bytes, so memory stays bounded) that
is only completed on commit; an aborted upload is aborted on the S3 side too, so nothing
partial is ever visible under the image's key. Small images go up in a single PUT.
"""

from __future__ import annotations

import asyncio
import functools
from typing import AsyncIterator

from stratus.image.drivers.base import Store, StoreWriter

MIN_PART = 5 * 1024 * 1024  # S3's lower bound for every part but the last


class S3Writer(StoreWriter):
    def __init__(self, store: "S3Store", key: str):
        self.store = store
        self.key = key
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    async def _call(self, fn, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, **kwargs))

    async def _flush_part(self) -> None:
        client = self.store.client
        if self.upload_id is None:
            resp = await self._call(client.create_multipart_upload, Bucket=self.store.bucket, Key=self.key)
            self.upload_id = resp["UploadId"]
        number = len(self.parts) + 1
        body = bytes(self.buffer)
        self.buffer.clear()
        resp = await self._call(client.upload_part, Bucket=self.store.bucket, Key=self.key,
                                UploadId=self.upload_id, PartNumber=number, Body=body)
        self.parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    async def write(self, data) -> None:
        self.buffer += data
        if len(self.buffer) >= self.store.part_size:
            await self._flush_part()

    async def commit(self) -> str:
        client = self.store.client
        if self.upload_id is None:
            body = bytes(self.buffer)
            self.buffer.clear()
            await self._call(client.put_object, Bucket=self.store.bucket, Key=self.key, Body=body)
            return self.key
        if self.buffer:
            await self._flush_part()
        await self._call(client.complete_multipart_upload, Bucket=self.store.bucket, Key=self.key,
                         UploadId=self.upload_id, MultipartUpload={"Parts": self.parts})
        self.upload_id = None
        return self.key

    async def abort(self) -> None:
        self.buffer = bytearray()
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            await self._call(self.store.client.abort_multipart_upload, Bucket=self.store.bucket,
                             Key=self.key, UploadId=upload_id)


class S3Store(Store):
    name = "s3"
    description = "Images in an S3 bucket"

    def __init__(self, *, endpoint_url: str | None, bucket: str, access_key: str | None, secret_key: str | None,
                 region: str = "us-east-1", prefix: str = "images/", part_size: int = 8 * 1024 * 1024):
        import boto3
        from botocore.config import Config as BotoConfig

        if part_size < MIN_PART:
            raise ValueError(f"configuration key 'image.s3_part_size' must be at least {MIN_PART} bytes")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.client = boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=access_key,
                                   aws_secret_access_key=secret_key, region_name=region,
                                   config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))
        self._bucket_checked = False

    async def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        loop = asyncio.get_running_loop()
        from botocore.exceptions import ClientError

        try:
            await loop.run_in_executor(None, functools.partial(self.client.head_bucket, Bucket=self.bucket))
        except ClientError:
            await loop.run_in_executor(None, functools.partial(self.client.create_bucket, Bucket=self.bucket))
        self._bucket_checked = True

    async def writer(self, key: str) -> StoreWriter:
        await self._ensure_bucket()
        return S3Writer(self, f"{self.prefix}{key}")

    async def read(self, location: str, offset: int = 0, length: int | None = None,
                   chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        if length == 0:
            return
        rng = f"bytes={offset}-" if length is None else f"bytes={offset}-{offset + length - 1}"
        kwargs = {"Bucket": self.bucket, "Key": location}
        if offset or length is not None:
            kwargs["Range"] = rng
        resp = await loop.run_in_executor(None, functools.partial(self.client.get_object, **kwargs))
        body = resp["Body"]
        try:
            while True:
                data = await loop.run_in_executor(None, body.read, chunk_size)
                if not data:
                    break
                yield data
        finally:
            body.close()

    async def delete(self, location: str) -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.client.delete_object, Bucket=self.bucket, Key=location))
