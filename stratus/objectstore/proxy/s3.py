"""S3 REST API (path style) under ``/s3``: ``http://H:P/s3/<bucket>/<key>``.

Authentication is AWS Signature V4 with Keystone EC2 credentials: the proxy rebuilds the
canonical request and the string to sign, and Identity checks the signature
(``POST /v3/s3tokens``), answering with a token for the credential's project. A bucket is a
container of account ``AUTH_<project_id>``, a key an object; requests are translated into
Swift requests that go down the rest of the pipeline as that user (so ACLs, quotas, large
objects and versioning apply). Errors are S3's XML.

Supported: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation,
ListObjects (v1, v2), PutObject, CopyObject, GetObject (Range, conditionals), HeadObject,
DeleteObject, DeleteObjects, multipart uploads (Create, UploadPart, Complete, Abort: parts are
objects in ``<bucket>+segments``, the result a static large object). Payload hashes
(``X-Amz-Content-SHA256``) are verified. Not yet: ListParts, ListMultipartUploads, ACLs,
versioning, presigned URLs, SigV2.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import quote, unquote
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

import httpx
import orjson

from stratus.common.context import RequestContext

from .http import Req, Resp, SwiftError

PREFIX = "/s3"
SEGMENTS = "+segments"  # container of multipart parts, as Swift's s3api names it
MIN_PART = 5 * 1024 * 1024
# an object made by a multipart upload takes its parts with it (a plain object: plain delete)
DELETE_SEGMENTS = {"multipart-manifest": "delete"}
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
STATUS_CODES = {400: "InvalidRequest", 401: "AccessDenied", 403: "AccessDenied",
                404: "NoSuchKey", 405: "MethodNotAllowed", 409: "Conflict",
                412: "PreconditionFailed", 413: "EntityTooLarge", 416: "InvalidRange",
                422: "BadDigest", 503: "ServiceUnavailable"}


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, resource: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.resource = status, code, message, resource


def error_response(exc: S3Error, request_id: str) -> Resp:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{exc.code}</Code>'
            f"<Message>{escape(exc.message)}</Message><Resource>{escape(exc.resource)}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()
    return Resp(exc.status, {"content-type": "application/xml"}, body)


def _uri_encode(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def _iso(last_modified: str) -> str:
    """Swift listing time (no zone) or an HTTP date → S3's ISO 8601 with milliseconds."""
    try:
        if "," in last_modified:
            from email.utils import parsedate_to_datetime
            dt = parsedate_to_datetime(last_modified)
        else:
            dt = datetime.fromisoformat(last_modified).replace(tzinfo=timezone.utc)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    except (TypeError, ValueError):
        return last_modified


class S3:
    def __init__(self, app, core, identity_url: str):
        self.app = app
        self.core = core
        self.identity_url = identity_url.rstrip("/")
        self._client: httpx.AsyncClient | None = None
        self._cache: dict[tuple, tuple[RequestContext, float]] = {}

    async def close(self):
        if self._client is not None:
            await self._client.aclose()

    async def __call__(self, req: Req) -> Resp:
        if not (req.path == PREFIX or req.path.startswith(PREFIX + "/")):
            return await self.app(req)
        try:
            ctx = await self.authenticate(req)
            return await self.dispatch(req, ctx)
        except S3Error as exc:
            return error_response(exc, req.env.get("trans_id", ""))

    # -- auth ------------------------------------------------------------------------------
    async def authenticate(self, req: Req) -> RequestContext:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise S3Error(403, "AccessDenied", "Requests must be signed with AWS Signature V4")
        fields = {}
        for part in auth[len("AWS4-HMAC-SHA256 "):].split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v
        try:
            access, date, region, service, term = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
            signature = fields["Signature"]
        except (KeyError, ValueError):
            raise S3Error(400, "AuthorizationHeaderMalformed", "Malformed Authorization header") from None
        amz_date = req.headers.get("x-amz-date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise S3Error(403, "AccessDenied", "X-Amz-Date is missing or malformed") from None
        if abs(when.timestamp() - time.time()) > 900:
            raise S3Error(403, "RequestTimeTooSkewed", "The request time is more than 15 minutes "
                                                       "from the server's")
        raw_path = req.env.get("raw_path") or quote(req.path)
        query = sorted((_uri_encode(k), _uri_encode(v)) for k, v in req.env.get("raw_query", []))
        canonical_query = "&".join(f"{k}={v}" for k, v in query)
        headers = []
        for name in signed:
            value = req.headers.get(name, "")
            headers.append(f"{name}:{' '.join(value.strip().split())}\n")
        payload = req.headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        canonical = "\n".join([req.method, raw_path, canonical_query, "".join(headers),
                               ";".join(signed), payload])
        scope = f"{date}/{region}/{service}/{term}"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = (access, signature, to_sign)
        hit = self._cache.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=30)
        token = base64.urlsafe_b64encode(to_sign.encode()).decode().rstrip("=")
        try:
            r = await self._client.post(f"{self.identity_url}/v3/s3tokens", json={
                "credentials": {"access": access, "token": token, "signature": signature}})
        except httpx.HTTPError:
            raise S3Error(503, "ServiceUnavailable", "Identity is unreachable") from None
        if r.status_code == 401:
            code = "SignatureDoesNotMatch" if "signature" in r.text.lower() else "InvalidAccessKeyId"
            raise S3Error(403, code, "The request signature or access key is not valid")
        if r.status_code != 200:
            raise S3Error(403, "AccessDenied", "Identity refused the credentials")
        ctx = RequestContext.from_token_body(r.json()["token"], r.headers.get("x-subject-token", ""))
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[key] = (ctx, time.monotonic() + 60)
        return ctx

    # -- requests --------------------------------------------------------------------------
    def _swift(self, req: Req, ctx, method: str, bucket: str | None = None,
               key: str | None = None, headers: dict | None = None, body=None,
               query: dict | None = None) -> Req:
        path = f"/v1/AUTH_{ctx.project_id}"
        if bucket:
            path += f"/{bucket}"
            if key:
                path += f"/{key}"
        env = {"trans_id": req.env.get("trans_id"), "ctx": ctx}
        return Req(method, path, dict(query or {}), dict(headers or {}), body, env)

    async def _call(self, sub: Req, resource: str, missing: str = "NoSuchKey") -> Resp:
        try:
            resp = await self.app(sub)
        except SwiftError as exc:
            code = STATUS_CODES.get(exc.status, "InternalError")
            if exc.status == 404:
                code = missing
            raise S3Error(exc.status if exc.status != 401 else 403, code, exc.message, resource) from None
        if resp.status >= 400 and resp.status not in (412, 416):
            await resp.discard()
            status = resp.status if resp.status != 401 else 403
            code = missing if status == 404 else STATUS_CODES.get(status, "InternalError")
            raise S3Error(status, code, f"{code}", resource)
        return resp

    async def dispatch(self, req: Req, ctx) -> Resp:
        rest = req.path[len(PREFIX):].lstrip("/")
        bucket, _, key = rest.partition("/")
        q = req.query
        m = req.method
        if not bucket:
            if m != "GET":
                raise S3Error(405, "MethodNotAllowed", "Only GET on the service")
            return await self.list_buckets(req, ctx)
        resource = f"/{bucket}" + (f"/{key}" if key else "")
        if not key:
            if m == "PUT":
                sub = self._swift(req, ctx, "PUT", bucket)
                resp = await self._call(sub, resource, "NoSuchBucket")
                if resp.status == 202:
                    raise S3Error(409, "BucketAlreadyOwnedByYou", "You already own this bucket",
                                  resource)
                return Resp(200, {"location": f"/{bucket}"}, b"")
            if m == "HEAD":
                await self._call(self._swift(req, ctx, "HEAD", bucket), resource, "NoSuchBucket")
                return Resp(200, {}, b"")
            if m == "DELETE":
                try:
                    await self._call(self._swift(req, ctx, "DELETE", bucket), resource, "NoSuchBucket")
                except S3Error as exc:
                    if exc.status == 409:
                        raise S3Error(409, "BucketNotEmpty", "The bucket is not empty", resource) from None
                    raise
                return Resp(204, {}, b"")
            if m == "GET" and "location" in q:
                await self._call(self._swift(req, ctx, "HEAD", bucket), resource, "NoSuchBucket")
                return self._xml(f'<LocationConstraint xmlns="{NS}"></LocationConstraint>')
            if m == "GET":
                return await self.list_objects(req, ctx, bucket, resource)
            if m == "POST" and "delete" in q:
                return await self.delete_objects(req, ctx, bucket, resource)
            raise S3Error(405, "MethodNotAllowed", f"{m} is not supported on a bucket", resource)
        if m in ("GET", "HEAD"):
            return await self.get_object(req, ctx, bucket, key, resource)
        if m == "PUT":
            if "uploadId" in q or "partNumber" in q:
                return await self.upload_part(req, ctx, bucket, key, resource)
            return await self.put_object(req, ctx, bucket, key, resource)
        if m == "POST" and "uploads" in q:
            return await self.create_upload(req, ctx, bucket, key, resource)
        if m == "POST" and "uploadId" in q:
            return await self.complete_upload(req, ctx, bucket, key, resource)
        if m == "DELETE" and "uploadId" in q:
            return await self.abort_upload(req, ctx, bucket, key, resource)
        if m == "DELETE":
            try:
                await self._call(self._swift(req, ctx, "DELETE", bucket, key,
                                             query=DELETE_SEGMENTS), resource)
            except S3Error as exc:
                if exc.status != 404:
                    raise
                info = await self.core.container_info(f"AUTH_{ctx.project_id}", bucket)
                if not info.exists:
                    raise S3Error(404, "NoSuchBucket", "The bucket does not exist", resource) from None
            return Resp(204, {}, b"")
        raise S3Error(405, "MethodNotAllowed", f"{m} is not supported on an object", resource)

    @staticmethod
    def _xml(body: str, status: int = 200) -> Resp:
        return Resp(status, {"content-type": "application/xml"},
                    ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode())

    async def list_buckets(self, req: Req, ctx) -> Resp:
        resp = await self._call(self._swift(req, ctx, "GET", query={"format": "json"}), "/")
        items = orjson.loads(await resp.read()) if resp.status == 200 else []
        items = [i for i in items if not i["name"].endswith(SEGMENTS)]
        buckets = "".join(f"<Bucket><Name>{escape(i['name'])}</Name><CreationDate>"
                          f"{_iso(i.get('last_modified', ''))}</CreationDate></Bucket>" for i in items)
        owner = f"<Owner><ID>{ctx.project_id}</ID><DisplayName>{escape(ctx.project_name or '')}</DisplayName></Owner>"
        return self._xml(f'<ListAllMyBucketsResult xmlns="{NS}">{owner}<Buckets>{buckets}</Buckets>'
                         "</ListAllMyBucketsResult>")

    async def list_objects(self, req: Req, ctx, bucket: str, resource: str) -> Resp:
        q = req.query
        v2 = q.get("list-type") == "2"
        try:
            max_keys = min(int(q.get("max-keys", "1000")), 1000)
        except ValueError:
            raise S3Error(400, "InvalidArgument", "max-keys must be an integer", resource) from None
        marker = (q.get("continuation-token") and _decode_token(q["continuation-token"])) or \
            (q.get("start-after", "") if v2 else q.get("marker", ""))
        query = {"format": "json", "limit": str(max_keys + 1)}
        for src, dst in (("prefix", "prefix"), ("delimiter", "delimiter")):
            if q.get(src):
                query[dst] = q[src]
        if marker:
            query["marker"] = marker
        resp = await self._call(self._swift(req, ctx, "GET", bucket, query=query), resource,
                                "NoSuchBucket")
        items = orjson.loads(await resp.read()) if resp.status == 200 else []
        truncated = len(items) > max_keys
        items = items[:max_keys]
        enc = q.get("encoding-type") == "url"
        e = (lambda s: quote(s, safe="/")) if enc else escape  # noqa: E731
        contents, prefixes = [], []
        for i in items:
            if "subdir" in i:
                prefixes.append(f"<CommonPrefixes><Prefix>{e(i['subdir'])}</Prefix></CommonPrefixes>")
            else:
                contents.append(f"<Contents><Key>{e(i['name'])}</Key><LastModified>"
                                f"{_iso(i['last_modified'])}</LastModified><ETag>&quot;{i['hash']}"
                                f"&quot;</ETag><Size>{i['bytes']}</Size>"
                                "<StorageClass>STANDARD</StorageClass></Contents>")
        last = (items[-1].get("name") or items[-1].get("subdir")) if items else ""
        parts = [f'<ListBucketResult xmlns="{NS}"><Name>{escape(bucket)}</Name>',
                 f"<Prefix>{e(q.get('prefix', ''))}</Prefix>", f"<MaxKeys>{max_keys}</MaxKeys>"]
        if q.get("delimiter"):
            parts.append(f"<Delimiter>{e(q['delimiter'])}</Delimiter>")
        if enc:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if v2:
            parts.append(f"<KeyCount>{len(items)}</KeyCount>")
            if q.get("continuation-token"):
                parts.append(f"<ContinuationToken>{escape(q['continuation-token'])}</ContinuationToken>")
            if q.get("start-after"):
                parts.append(f"<StartAfter>{e(q['start-after'])}</StartAfter>")
            if truncated:
                parts.append(f"<NextContinuationToken>{_encode_token(last)}</NextContinuationToken>")
        else:
            parts.append(f"<Marker>{e(q.get('marker', ''))}</Marker>")
            if truncated and q.get("delimiter"):
                parts.append(f"<NextMarker>{e(last)}</NextMarker>")
        parts += contents + prefixes + ["</ListBucketResult>"]
        return self._xml("".join(parts))

    async def put_object(self, req: Req, ctx, bucket: str, key: str, resource: str) -> Resp:
        headers = {}
        for k, v in req.headers.items():
            if k.startswith("x-amz-meta-"):
                headers["x-object-meta-" + k[len("x-amz-meta-"):]] = v
            elif k in ("content-type", "content-length", "content-encoding", "content-disposition",
                       "cache-control", "expires", "transfer-encoding"):
                headers[k] = v
        md5 = req.headers.get("content-md5")
        if md5:
            try:
                headers["etag"] = base64.b64decode(md5).hex()
            except ValueError:
                raise S3Error(400, "InvalidDigest", "Content-MD5 is not base64", resource) from None
        source = req.headers.get("x-amz-copy-source")
        if source:
            src = unquote(source).lstrip("/")
            headers = {k: v for k, v in headers.items() if k not in ("content-length", "etag")}
            if req.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE":
                headers["x-fresh-metadata"] = "true"
            headers["x-copy-from"] = quote("/" + src)
            headers["content-length"] = "0"
            sub = self._swift(req, ctx, "PUT", bucket, key, headers, b"")
            resp = await self._call(sub, resource)
            etag = resp.headers.get("etag", "").strip('"')
            return self._xml(f'<CopyObjectResult xmlns="{NS}"><LastModified>'
                             f"{_iso(resp.headers.get('last-modified', ''))}</LastModified>"
                             f"<ETag>&quot;{etag}&quot;</ETag></CopyObjectResult>")
        sub = self._swift(req, ctx, "PUT", bucket, key, headers, self.verified_body(req, resource))
        try:
            resp = await self._call(sub, resource)
        except S3Error as exc:
            if exc.status == 404:
                raise S3Error(404, "NoSuchBucket", "The bucket does not exist", resource) from None
            raise
        return Resp(200, {"etag": f'"{resp.headers.get("etag", "")}"'}, b"")

    @staticmethod
    def verified_body(req: Req, resource: str):
        """The body, checked against the signed X-Amz-Content-SHA256 (a mismatch fails the
        request before the nodes commit anything)."""
        want = req.headers.get("x-amz-content-sha256", "")
        body = req.body if req.body is not None else b""
        if len(want) != 64:
            return body  # UNSIGNED-PAYLOAD
        if isinstance(body, (bytes, bytearray)):
            if hashlib.sha256(body).hexdigest() != want:
                raise S3Error(400, "XAmzContentSHA256Mismatch",
                              "The body does not match X-Amz-Content-SHA256", resource)
            return body

        async def checked():
            h = hashlib.sha256()
            pending = None
            async for chunk in body:
                if pending is not None:
                    yield pending
                h.update(chunk)
                pending = chunk
            if h.hexdigest() != want:
                raise SwiftError(400, "The body does not match X-Amz-Content-SHA256")
            if pending is not None:
                yield pending

        return checked()

    # -- multipart uploads -----------------------------------------------------------------
    async def _upload_exists(self, req, ctx, bucket, key, upload_id, resource):
        if not upload_id or "/" in upload_id:
            raise S3Error(404, "NoSuchUpload", "The upload does not exist", resource)
        marker = self._swift(req, ctx, "HEAD", bucket + SEGMENTS, f"{key}/{upload_id}")
        try:
            await self._call(marker, resource, "NoSuchUpload")
        except S3Error as exc:
            if exc.status == 404:
                raise S3Error(404, "NoSuchUpload", "The upload does not exist", resource) from None
            raise

    async def create_upload(self, req, ctx, bucket, key, resource) -> Resp:
        await self._call(self._swift(req, ctx, "HEAD", bucket), resource, "NoSuchBucket")
        await self._call(self._swift(req, ctx, "PUT", bucket + SEGMENTS), resource)
        upload_id = uuid.uuid4().hex
        meta = {"x-object-meta-" + k[len("x-amz-meta-"):]: v for k, v in req.headers.items()
                if k.startswith("x-amz-meta-")}
        if "content-type" in req.headers:
            meta["x-object-meta-s3-content-type"] = req.headers["content-type"]
        marker = self._swift(req, ctx, "PUT", bucket + SEGMENTS, f"{key}/{upload_id}",
                             dict(meta, **{"content-length": "0"}), b"")
        await self._call(marker, resource)
        return self._xml(f'<InitiateMultipartUploadResult xmlns="{NS}"><Bucket>{escape(bucket)}'
                         f"</Bucket><Key>{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
                         "</InitiateMultipartUploadResult>")

    async def upload_part(self, req, ctx, bucket, key, resource) -> Resp:
        upload_id = req.query.get("uploadId", "")
        try:
            number = int(req.query.get("partNumber", ""))
        except ValueError:
            raise S3Error(400, "InvalidArgument", "partNumber must be 1..10000", resource) from None
        if not 1 <= number <= 10000:
            raise S3Error(400, "InvalidArgument", "partNumber must be 1..10000", resource)
        await self._upload_exists(req, ctx, bucket, key, upload_id, resource)
        headers = {k: v for k, v in req.headers.items()
                   if k in ("content-length", "transfer-encoding")}
        sub = self._swift(req, ctx, "PUT", bucket + SEGMENTS, f"{key}/{upload_id}/{number:05d}",
                          headers, self.verified_body(req, resource))
        resp = await self._call(sub, resource)
        return Resp(200, {"etag": f'"{resp.headers.get("etag", "")}"'}, b"")

    async def complete_upload(self, req, ctx, bucket, key, resource) -> Resp:
        upload_id = req.query.get("uploadId", "")
        await self._upload_exists(req, ctx, bucket, key, upload_id, resource)
        raw = await req.read_body(4 * 1024 * 1024)
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            raise S3Error(400, "MalformedXML", "The body is not valid XML", resource) from None
        parts = []
        for el in root:
            if el.tag.rsplit("}", 1)[-1] != "Part":
                continue
            fields = {c.tag.rsplit("}", 1)[-1]: (c.text or "").strip() for c in el}
            try:
                parts.append((int(fields["PartNumber"]), fields["ETag"].strip('"')))
            except (KeyError, ValueError):
                raise S3Error(400, "MalformedXML", "Each Part needs PartNumber and ETag",
                              resource) from None
        if not parts:
            raise S3Error(400, "MalformedXML", "No parts given", resource)
        if [n for n, _ in parts] != sorted({n for n, _ in parts}):
            raise S3Error(400, "InvalidPartOrder", "Parts must be in ascending order", resource)
        manifest, digests = [], []
        for i, (number, etag) in enumerate(parts):
            name = f"{key}/{upload_id}/{number:05d}"
            try:
                head = await self._call(self._swift(req, ctx, "HEAD", bucket + SEGMENTS, name),
                                        resource)
            except S3Error as exc:
                if exc.status == 404:
                    raise S3Error(400, "InvalidPart", f"Part {number} was not uploaded",
                                  resource) from None
                raise
            if head.headers.get("etag", "").strip('"') != etag:
                raise S3Error(400, "InvalidPart", f"Part {number}'s ETag does not match", resource)
            size = int(head.headers.get("content-length", "0"))
            if size < MIN_PART and i < len(parts) - 1:
                raise S3Error(400, "EntityTooSmall", f"Part {number} is smaller than 5 MiB",
                              resource)
            manifest.append({"path": f"/{bucket}{SEGMENTS}/{name}", "etag": etag,
                             "size_bytes": size})
            digests.append(bytes.fromhex(etag))
        marker = await self._call(self._swift(req, ctx, "HEAD", bucket + SEGMENTS,
                                              f"{key}/{upload_id}"), resource)
        headers = {k: v for k, v in marker.headers.items()
                   if k.startswith("x-object-meta-") and k != "x-object-meta-s3-content-type"}
        ctype = marker.headers.get("x-object-meta-s3-content-type")
        if ctype:
            headers["content-type"] = ctype
        body = orjson.dumps(manifest)
        headers["content-length"] = str(len(body))
        put = self._swift(req, ctx, "PUT", bucket, key, headers, body,
                          {"multipart-manifest": "put"})
        await self._call(put, resource)
        await (await self._call(self._swift(req, ctx, "DELETE", bucket + SEGMENTS,
                                            f"{key}/{upload_id}"), resource)).discard()
        s3_etag = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(parts)}"
        return self._xml(f'<CompleteMultipartUploadResult xmlns="{NS}"><Location>/{escape(bucket)}/'
                         f"{escape(key)}</Location><Bucket>{escape(bucket)}</Bucket><Key>"
                         f"{escape(key)}</Key><ETag>&quot;{s3_etag}&quot;</ETag>"
                         "</CompleteMultipartUploadResult>")

    async def abort_upload(self, req, ctx, bucket, key, resource) -> Resp:
        upload_id = req.query.get("uploadId", "")
        await self._upload_exists(req, ctx, bucket, key, upload_id, resource)
        listing = await self._call(self._swift(req, ctx, "GET", bucket + SEGMENTS, query={
            "format": "json", "prefix": f"{key}/{upload_id}/"}), resource)
        items = orjson.loads(await listing.read()) if listing.status == 200 else []
        for item in items:
            try:
                await (await self._call(self._swift(req, ctx, "DELETE", bucket + SEGMENTS,
                                                    item["name"]), resource)).discard()
            except S3Error as exc:
                if exc.status != 404:
                    raise
        await (await self._call(self._swift(req, ctx, "DELETE", bucket + SEGMENTS,
                                            f"{key}/{upload_id}"), resource)).discard()
        return Resp(204, {}, b"")

    async def get_object(self, req: Req, ctx, bucket: str, key: str, resource: str) -> Resp:
        headers = {k: v for k, v in req.headers.items()
                   if k in ("range", "if-match", "if-none-match", "if-modified-since",
                            "if-unmodified-since")}
        sub = self._swift(req, ctx, req.method, bucket, key, headers)
        try:
            resp = await self._call(sub, resource)
        except S3Error as exc:
            if req.method == "HEAD":
                return Resp(exc.status, {}, b"")
            raise
        if resp.status in (412, 416):
            await resp.discard()
            code = "PreconditionFailed" if resp.status == 412 else "InvalidRange"
            raise S3Error(resp.status, code, code, resource)
        out = {}
        for k, v in resp.headers.items():
            if k.startswith("x-object-meta-"):
                out["x-amz-meta-" + k[len("x-object-meta-"):]] = v
            elif k in ("content-length", "content-type", "last-modified", "content-range",
                       "accept-ranges", "content-encoding", "content-disposition",
                       "cache-control", "expires"):
                out[k] = v
        etag = resp.headers.get("etag", "").strip('"')
        if etag:
            out["etag"] = f'"{etag}"'
        resp.headers = out
        return resp

    async def delete_objects(self, req: Req, ctx, bucket: str, resource: str) -> Resp:
        raw = await req.read_body(2 * 1024 * 1024)
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            raise S3Error(400, "MalformedXML", "The Delete body is not valid XML", resource) from None
        quiet = False
        keys = []
        for el in root.iter():
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "Quiet":
                quiet = (el.text or "").strip().lower() == "true"
            elif tag == "Key":
                keys.append(el.text or "")
        if len(keys) > 1000:
            raise S3Error(400, "MalformedXML", "At most 1000 keys per request", resource)
        out = []
        for key in keys:
            try:
                await self._call(self._swift(req, ctx, "DELETE", bucket, key, query=DELETE_SEGMENTS),
                                 f"/{bucket}/{key}")
            except S3Error as exc:
                if exc.status != 404:
                    out.append(f"<Error><Key>{escape(key)}</Key><Code>{exc.code}</Code>"
                               f"<Message>{escape(exc.message)}</Message></Error>")
                    continue
            if not quiet:
                out.append(f"<Deleted><Key>{escape(key)}</Key></Deleted>")
        return self._xml(f'<DeleteResult xmlns="{NS}">{"".join(out)}</DeleteResult>')


def _encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8", "surrogateescape")).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "surrogateescape")
    except ValueError:
        raise S3Error(400, "InvalidArgument", "The continuation token is not valid") from None
