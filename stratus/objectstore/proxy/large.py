"""Large objects: static (SLO, ``?multipart-manifest=``) and dynamic (DLO, ``X-Object-Manifest``).

SLO: ``PUT ?multipart-manifest=put`` with a JSON list of ``{"path", "etag", "size_bytes",
"range"}`` or inline ``{"data": <base64>}`` (bytes kept in the manifest itself; at least one
segment must be an object, and an inline one counts in the ETag as the md5 of its bytes and
not against the segment limit); every object segment is checked (HEAD as the caller: exists,
etag and size match) and the
manifest is stored with ``X-Static-Large-Object: True`` and, as sysmeta, the large object's
ETag and size. Swift's ETag for an SLO is the md5 of the concatenated segment ETags (with
``:<range>;`` after a ranged segment's), shown quoted. ``?multipart-manifest=get`` returns the
stored manifest (``&format=raw``: the PUT format), ``?multipart-manifest=delete`` removes the
segments and the manifest.

DLO: a (zero-byte) object with ``X-Object-Manifest: <container>/<prefix>``; its content is
every object of that container whose name starts with the prefix, in name order, listed at read
time; ETag is the quoted md5 of the concatenated segment ETags.

Reads stream segment after segment through the rest of the pipeline as the caller (nested SLOs
work; ACLs apply to segment containers). Range (single and multiple) and conditional headers
are applied to the whole large object here, not to the manifest.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import uuid
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, urlencode

import orjson

from ..backend import LISTING_ETAG, LISTING_SIZE
from .http import (Req, Resp, SwiftError, header_text, report_body, report_type,
                   spaces_until, status_line)

CONDITIONAL = ("range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
MAX_DEPTH = 10
# what Swift's reports say of these outcomes (clients compare the text)
BAD_REQUEST_TEXT = ("Bad Request\nThe server could not comply with the request since it is "
                    "either malformed or otherwise incorrect.")
STATUS_TEXT = {400: BAD_REQUEST_TEXT,
               422: "Unprocessable Entity\nUnable to process the contained instructions"}


class ManifestRefused(SwiftError):
    """An SLO manifest with bad segments: ``problems`` is [[segment, what is wrong], ...]."""

    def __init__(self, problems: list[list[str]]):
        super().__init__(400, "Errors:\n" + "".join(f"{n}, {p}\n" for n, p in problems))
        self.problems = problems


def parse_range(header: str | None, length: int):
    """[(start, end_exclusive), ...]; [] when no range is satisfiable; None when the header
    is absent or malformed (then the whole object is served, as Swift does)."""
    if not header:
        return None
    header = header.strip()
    if not header.lower().startswith("bytes="):
        return None
    out = []
    for spec in header[6:].split(","):
        spec = spec.strip()
        if "-" not in spec:
            return None
        first, _, last = spec.partition("-")
        try:
            if first == "":
                if not last:
                    return None
                n = int(last)
                if n == 0:
                    continue
                out.append((max(0, length - n), length))
                continue
            start = int(first)
            end = int(last) + 1 if last else length
        except ValueError:
            return None
        if start > end - 1 and last:
            return None
        if start >= length:
            continue
        out.append((start, min(end, length)))
    return out


def _etag_list(value: str) -> list[str]:
    return [v.strip().strip('"') for v in value.split(",") if v.strip()]


def check_conditions(headers: dict, etag: str, last_modified: str | None) -> int | None:
    """304/412 per RFC 7232 for the large object's ETag and Last-Modified, or None."""
    etag = etag.strip('"')
    im = headers.get("if-match")
    if im is not None:
        tags = _etag_list(im)
        if "*" not in tags and etag not in tags:
            return 412
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = _etag_list(inm)
        if "*" in tags or etag in tags:
            return 304
    if last_modified:
        try:
            lm = parsedate_to_datetime(last_modified).timestamp()
        except (TypeError, ValueError):
            lm = None
        if lm is not None:
            ius = headers.get("if-unmodified-since")
            if ius and im is None:
                try:
                    if lm > parsedate_to_datetime(ius).timestamp():
                        return 412
                except (TypeError, ValueError):
                    pass
            ims = headers.get("if-modified-since")
            if ims and inm is None:
                try:
                    if lm <= parsedate_to_datetime(ims).timestamp():
                        return 304
                except (TypeError, ValueError):
                    pass
    return None


def slo_etag(segments: list[dict]) -> str:
    h = hashlib.md5()
    for seg in segments:
        if "data" in seg:
            h.update(hashlib.md5(base64.b64decode(seg["data"])).hexdigest().encode())
            continue
        h.update(seg["hash"].strip('"').encode())
        if seg.get("range"):
            h.update(f":{seg['range']};".encode())
    return h.hexdigest()


def _inline_data(value) -> bytes | None:
    """An inline segment's bytes, or None when ``value`` is not strict base64."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


class LargeObjects:
    def __init__(self, app, core, settings):
        self.app = app
        self.core = core
        self.max_segments = settings.max_manifest_segments
        self.max_manifest_size = settings.max_manifest_size

    async def __call__(self, req: Req) -> Resp:
        if req.obj is None:
            return await self.app(req)
        mm = req.query.get("multipart-manifest")
        if req.method in ("PUT", "POST"):
            if mm == "put" and req.method == "PUT":
                return await self.slo_put(req)
            # a POST sets (or, without it, drops) X-Object-Manifest as it does Content-Type:
            # a regular object can become a DLO manifest and back
            if "x-object-manifest" in req.headers:
                _check_dlo_header(req.headers["x-object-manifest"])
            return await self.app(req)
        if req.method == "DELETE" and mm == "delete":
            return await self.slo_delete(req)
        if req.method not in ("GET", "HEAD"):
            return await self.app(req)
        if mm == "get":
            return await self.manifest_get(req)
        if req.env.get("lo_depth", 0) > MAX_DEPTH:
            raise SwiftError(409, "Too many levels of nested large objects")
        if any(h in req.headers for h in CONDITIONAL):
            # Conditions and ranges apply to the large object, not to its manifest: look first.
            probe = req.sub("HEAD", req.path)
            head = await self.app(probe)
            if head.status == 200 and _is_large(head.headers):
                return await self.large_get(req)
            return await self.app(req)
        resp = await self.app(req)
        if resp.status == 200 and _is_large(resp.headers):
            return await self.large_get(req, first=resp)
        return resp

    # -- reading -----------------------------------------------------------------------------
    async def large_get(self, req: Req, first: Resp | None = None) -> Resp:
        """Serve an SLO or DLO (``first``: the manifest's GET/HEAD response if we have it)."""
        part_number = None
        if first is not None and _is_slo(first.headers):
            try:
                part_number = _part_number(req)
            except SwiftError:
                await first.discard()
                raise
        if first is None or (req.method == "GET" and isinstance(first.body, bytes)
                             and not first.body and _is_slo(first.headers)):
            manifest_req = req.sub("GET", req.path)
            if first is not None:
                await first.discard()
            first = await self.app(manifest_req)
            if first.status != 200:
                return first
            if _is_slo(first.headers):
                part_number = _part_number(req)
        headers = dict(first.headers)
        if _is_slo(headers):
            # the manifest's own ETag (md5 of its JSON) stays visible beside the large
            # object's, as Swift shows it
            if headers.get("etag"):
                headers["x-manifest-etag"] = headers["etag"].strip('"')
            if req.method == "HEAD" and part_number is None \
                    and "x-object-sysmeta-slo-size" in headers:
                await first.discard()
                segments = None
                total = int(headers["x-object-sysmeta-slo-size"])
                etag = headers.get("x-object-sysmeta-slo-etag", "")
            else:
                if req.method == "HEAD":
                    await first.discard()
                    first = await self.app(req.sub("GET", req.path))
                raw = await _read_bounded(first, self.max_manifest_size + 65536)
                try:
                    manifest = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise SwiftError(503, "The large object's manifest is unreadable") from None
                segments = [_slo_segment(s) for s in manifest]
                total = sum(s[3] - s[2] for s in segments)
                etag = headers.get("x-object-sysmeta-slo-etag") or slo_etag(manifest)
            headers["x-static-large-object"] = "True"
        else:
            await first.discard()
            segments = await self.dlo_segments(req, headers["x-object-manifest"])
            total = sum(s[3] - s[2] for s in segments)
            etag = hashlib.md5("".join(s[4] for s in segments).encode()).hexdigest()
        headers["etag"] = f'"{etag}"'
        headers.pop("content-range", None)
        cond = check_conditions(req.headers, etag, headers.get("last-modified"))
        if cond is not None:
            headers.pop("content-length", None)
            return Resp(cond, headers, b"")
        if part_number is not None:
            # ?part-number=N: the Nth manifest entry's bytes, as a 206 of the whole object
            headers["x-parts-count"] = str(len(segments))
            if part_number > len(segments):
                headers["content-range"] = f"bytes */{total}"
                headers["content-type"] = "text/plain; charset=UTF-8"
                body = b"" if req.method == "HEAD" else \
                    b"The requested part number is not satisfiable"
                headers["content-length"] = str(len(body))
                return Resp(416, headers, body)
            start = sum(s[3] - s[2] for s in segments[:part_number - 1])
            end = start + segments[part_number - 1][3] - segments[part_number - 1][2]
            ranges = [(start, end)]
        else:
            ranges = parse_range(req.headers.get("range"), total)
        if ranges and len(ranges) > 1 and not _is_slo(headers):
            ranges = None  # as Swift: a DLO answers several ranges with the whole object
        if ranges == []:
            return Resp(416, {"content-range": f"bytes */{total}",
                              "content-type": "text/html; charset=UTF-8"},
                        b"<html><h1>Requested Range Not Satisfiable</h1></html>")
        if segments is None or (req.method == "HEAD" and part_number is None):
            headers["content-length"] = str(total)
            return Resp(200, headers, b"")
        await self._authorize_segments(req, segments)
        depth = req.env.get("lo_depth", 0) + 1
        if ranges is None:
            headers["content-length"] = str(total)
            body = await _started(self._stream(req, segments, 0, total, depth))
            return Resp(200, headers, body)
        if len(ranges) == 1:
            start, end = ranges[0]
            headers["content-length"] = str(end - start)
            headers["content-range"] = f"bytes {start}-{end - 1}/{total}"
            if req.method == "HEAD":  # a part-number HEAD: the part's length, as a 206
                return Resp(206, headers, b"")
            body = await _started(self._stream(req, segments, start, end, depth))
            return Resp(206, headers, body)
        boundary = uuid.uuid4().hex
        ctype = headers.get("content-type", "application/octet-stream")
        parts = []
        length = 0
        for start, end in ranges:
            head = (f"--{boundary}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Range: bytes {start}-{end - 1}/{total}\r\n\r\n").encode()
            parts.append((head, start, end))
            length += len(head) + (end - start) + 2
        tail = f"--{boundary}--".encode()
        length += len(tail)
        headers["content-type"] = f"multipart/byteranges; boundary={boundary}"
        headers["content-length"] = str(length)

        async def multipart():
            for head, start, end in parts:
                # a part's head goes out with its first bytes, so that a segment which
                # cannot be read is found before the answer starts (see _started)
                async for chunk in self._stream(req, segments, start, end, depth):
                    if head:
                        chunk, head = head + chunk, b""
                    yield chunk
                yield b"\r\n"
            yield tail

        return Resp(206, headers, await _started(multipart()))

    async def _authorize_segments(self, req: Req, segments) -> None:
        """Refuse (409, as a segment that cannot be read) before answering when the caller may
        not read some segment: met while streaming, a refusal could only cut the body short.
        Read rights (ACLs, a temp URL's reach) go by container, so one segment per container
        is asked about, as :meth:`_stream` will ask."""
        seen = set()
        for container, obj, *_ in segments:
            if container is None or container in seen:
                continue
            seen.add(container)
            sub = req.sub("GET", f"/{req.version}/{req.account}/{container}/{obj}")
            try:
                self.core.authorize(sub, await self.core.container_info(req.account, container))
            except SwiftError as exc:
                raise SwiftError(409, f"Segment {container}/{obj} could not be read "
                                      f"({exc.status}); the large object is incomplete") from None

    async def _stream(self, req: Req, segments, start: int, end: int, depth: int):
        """Bytes [start, end) of the concatenation of ``segments``
        ((container, object, seg_start, seg_end, etag, whole_size))."""
        offset = 0
        for container, obj, s_start, s_end, etag, whole in segments:
            length = s_end - s_start
            if offset + length <= start:
                offset += length
                continue
            if offset >= end:
                break
            a = s_start + max(0, start - offset)
            b = s_start + min(length, end - offset)  # exclusive
            if container is None:  # inline data kept in the manifest
                yield obj[a:b]
                offset += length
                continue
            headers = {}
            if a != 0 or (whole is not None and b != whole) or whole is None:
                headers["range"] = f"bytes={a}-{b - 1}"
            sub = req.sub("GET", f"/{req.version}/{req.account}/{container}/{obj}",
                          headers=headers)
            sub.env["lo_depth"] = depth
            try:
                resp = await self(sub)
            except SwiftError as exc:
                if exc.status not in (401, 403, 404):
                    raise
                # refused to the caller or gone: the large object cannot be served whole
                raise SwiftError(409, f"Segment {container}/{obj} could not be read "
                                      f"({exc.status}); the large object is incomplete") \
                    from None
            if resp.status not in (200, 206):
                await resp.discard()
                raise SwiftError(409, f"Segment {container}/{obj} could not be read "
                                      f"({resp.status}); the large object is incomplete")
            if etag and "range" not in headers and resp.status == 200:
                got = resp.headers.get("etag", "").strip('"')
                if got and got != etag.strip('"'):
                    await resp.discard()
                    raise SwiftError(409, f"Segment {container}/{obj} changed since the "
                                          "manifest was written")
            expected = b - a
            sent = 0
            try:
                if isinstance(resp.body, bytes):
                    data = resp.body
                    if resp.status == 200 and "range" in headers:
                        data = data[a:b]
                    sent = len(data)
                    yield data
                else:
                    async for chunk in resp.body:
                        sent += len(chunk)
                        yield chunk
            finally:
                if resp.on_close is not None:
                    resp.on_close()
            if sent != expected:
                raise SwiftError(503, f"Segment {container}/{obj} was cut short")
            offset += length

    async def dlo_segments(self, req: Req, manifest: str):
        container, prefix = _check_dlo_header(manifest)
        segments = []
        marker = ""
        while True:
            query = {"format": "json", "prefix": prefix}
            if marker:
                query["marker"] = marker
            sub = req.sub("GET", f"/{req.version}/{req.account}/{container}", query=query)
            resp = await self.app(sub)
            if resp.status == 404:
                return segments
            if resp.status == 204:
                return segments
            if resp.status != 200:
                raise SwiftError(resp.status if resp.status < 500 else 503,
                                 f"Could not list the segments in {container}")
            items = orjson.loads(await resp.read())
            if not items:
                return segments
            for item in items:
                segments.append((container, item["name"], 0, item["bytes"], item["hash"],
                                 item["bytes"]))
            marker = items[-1]["name"]

    async def manifest_get(self, req: Req) -> Resp:
        resp = await self.app(req)
        if resp.status != 200 or not _is_slo(resp.headers):
            return resp
        own_type = resp.headers.get("content-type", "application/octet-stream")
        raw_format = req.query.get("format") == "raw"
        if not raw_format:
            resp.headers["content-type"] = "application/json; charset=utf-8"
        if req.method == "HEAD":
            return resp
        raw = await _read_bounded(resp, self.max_manifest_size + 65536)
        if raw_format:
            manifest = orjson.loads(raw)
            out = []
            for seg in manifest:
                if "data" in seg:
                    out.append({"data": seg["data"]})
                    continue
                item = {"path": seg["name"], "etag": seg["hash"], "size_bytes": seg["bytes"]}
                if seg.get("range"):
                    item["range"] = seg["range"]
                out.append(item)
            raw = orjson.dumps(out)
            # the PUT format, typed as the large object (what a client sent on its PUT, so
            # that it can be sent back as it is), with the ETag of these very bytes
            resp.headers["etag"] = hashlib.md5(raw).hexdigest()
            resp.headers["content-type"] = own_type
        resp.headers["content-length"] = str(len(raw))
        resp.body = raw
        return resp

    # -- writing -----------------------------------------------------------------------------
    async def slo_put(self, req: Req) -> Resp:
        raw = await req.read_body(self.max_manifest_size)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise SwiftError(400, "Manifest must be valid JSON: a list of {path, etag, "
                                  "size_bytes}") from None
        if not isinstance(doc, list) or not doc:
            raise SwiftError(400, "Manifest must be a non-empty JSON list")
        if sum(1 for seg in doc if not (isinstance(seg, dict) and "data" in seg)) \
                > self.max_segments:
            raise SwiftError(400, f"Too many segments: the limit is {self.max_segments}")
        if req.query.get("heartbeat", "").lower() not in ("on", "true", "1", "yes"):
            try:
                return await self.store_manifest(req, doc)
            except ManifestRefused as exc:
                ctype = report_type(req.headers.get("accept", ""))
                return Resp(400, {"content-type": ctype},
                            report_body(ctype, {}, exc.problems, "upload"))
        return self.heartbeat_put(req, doc)

    def heartbeat_put(self, req: Req, doc: list) -> Resp:
        """``?heartbeat=on``: answer 202 at once and send a space every few seconds while the
        segments are checked (a large manifest can take longer than a client waits for a
        status), then the outcome as a report in the body, as Swift does."""
        ctype = report_type(req.headers.get("accept", ""))

        async def report():
            work = asyncio.ensure_future(self.store_manifest(req, doc))
            try:
                async for space in spaces_until(work):
                    yield space
            finally:
                if not work.done():
                    work.cancel()
            problems: list = []
            try:
                resp = work.result()
            except ManifestRefused as exc:
                problems = exc.problems
                fields = {"Response Status": status_line(400),
                          "Response Body": BAD_REQUEST_TEXT}
            except SwiftError as exc:
                fields = {"Response Status": status_line(exc.status),
                          "Response Body": STATUS_TEXT.get(exc.status, exc.message)}
            else:
                fields = {"Response Status": status_line(resp.status), "Response Body": ""}
                if resp.status // 100 == 2:
                    fields["Etag"] = resp.headers.get("etag", "")
                    fields["Last Modified"] = resp.headers.get("last-modified", "")
                else:
                    fields["Response Body"] = (await resp.read()).decode("utf-8", "replace")
            yield b"\r\n\r\n" + report_body(ctype, fields, problems, "upload")

        return Resp(202, {"content-type": ctype}, report())

    async def store_manifest(self, req: Req, doc: list) -> Resp:
        """Check every segment of an SLO manifest (as the caller) and store it; raises
        :class:`ManifestRefused` listing what is wrong with which segment."""
        errors: list[list[str]] = []
        sem = asyncio.Semaphore(8)

        async def check(index: int, seg) -> dict | None:
            if isinstance(seg, dict) and "data" in seg:
                if set(seg) != {"data"}:
                    errors.append([f"Index {index}", "an inline data segment has only "
                                                     "\"data\""])
                    return None
                raw_data = _inline_data(seg["data"])
                if raw_data is None:
                    errors.append([f"Index {index}", "data must be valid base64"])
                    return None
                if not raw_data:
                    errors.append([f"Index {index}", "too small; each segment must be at "
                                                     "least 1 byte."])
                    return None
                return {"data": base64.b64encode(raw_data).decode("ascii")}
            if not isinstance(seg, dict) or not isinstance(seg.get("path"), str):
                errors.append([f"Index {index}", "segment must be an object with a string "
                                                 "path"])
                return None
            unknown = set(seg) - {"path", "etag", "size_bytes", "range"}
            if unknown:
                errors.append([f"Index {index}", f"unknown keys {sorted(unknown)}"])
                return None
            # the path is the segment's name as it is, not URL-encoded: an object may
            # well be called "a%ffb"
            shown = quote(seg["path"].lstrip("/"))
            container, _, obj = seg["path"].lstrip("/").partition("/")
            if not container or not obj:
                errors.append([f"Index {index}", "path must be /container/object"])
                return None
            if (container, obj) == (req.container, req.obj):
                # it would read itself (and overwrite the segment it names)
                errors.append([f"Index {index}", "manifest must not include itself as a "
                                                 "segment"])
                return None
            sub = req.sub("HEAD", f"/{req.version}/{req.account}/{container}/{obj}")
            async with sem:
                try:
                    head = await self(sub)
                except SwiftError as exc:
                    errors.append([shown, status_line(exc.status)])
                    return None
            if head.status != 200:
                errors.append([shown, status_line(head.status)])
                return None
            size = int(head.headers.get("content-length", "0"))
            etag = head.headers.get("etag", "").strip('"')
            want_etag = seg.get("etag")
            if want_etag and want_etag.strip('"') != etag:
                errors.append([shown, "Etag Mismatch"])
                return None
            want_size = seg.get("size_bytes")
            if want_size is not None:
                try:
                    if int(want_size) != size:
                        errors.append([shown, "Size Mismatch"])
                        return None
                except (TypeError, ValueError):
                    errors.append([f"Index {index}", "size_bytes must be an integer"])
                    return None
            item = {"name": f"/{container}/{obj}", "bytes": size, "hash": etag,
                    "content_type": head.headers.get("content-type", ""),
                    "last_modified": head.headers.get("last-modified", "")}
            if _is_slo(head.headers):
                item["sub_slo"] = True
            rng = seg.get("range")
            if rng:
                parsed = parse_range(f"bytes={rng}", size)
                if not parsed or len(parsed) != 1:
                    errors.append([shown, "Unsatisfiable Range"])
                    return None
                start, end = parsed[0]
                item["range"] = f"{start}-{end - 1}"
            return item

        items = await asyncio.gather(*(check(i, s) for i, s in enumerate(doc)))
        if not errors and all("data" in item for item in items):
            errors.append(["Manifest", "Inline data segments require at least one "
                                       "object-backed segment."])
        if errors:
            raise ManifestRefused(errors)
        total = 0
        for item in items:
            if "data" in item:
                total += len(base64.b64decode(item["data"]))
            elif item.get("range"):
                a, b = item["range"].split("-")
                total += int(b) - int(a) + 1
            else:
                total += item["bytes"]
        etag = slo_etag(items)
        want = req.headers.get("etag")
        if want and want.strip('"') != etag:
            raise SwiftError(422, "The manifest's ETag (md5 of the segment ETags) does not "
                                  "match the request's ETag")
        body = orjson.dumps(items)
        headers = {k: v for k, v in req.headers.items()
                   if k not in ("etag", "content-length", "transfer-encoding")}
        headers["content-length"] = str(len(body))
        env = dict(req.env)
        # the container listing shows the large object's size, and its ETag beside the
        # manifest's own (as Swift does: "hash" and "slo_etag")
        env["sysmeta"] = {"x-static-large-object": "True",
                          "x-object-sysmeta-slo-etag": etag,
                          "x-object-sysmeta-slo-size": str(total),
                          LISTING_SIZE: str(total),
                          LISTING_ETAG: f'{hashlib.md5(body).hexdigest()}; slo_etag="{etag}"'}
        put = Req("PUT", req.path, {}, headers, body, env)
        resp = await self.app(put)
        if resp.status == 201:
            resp.headers["etag"] = f'"{etag}"'
        return resp

    async def slo_delete(self, req: Req) -> Resp:
        get = req.sub("GET", req.path, query={"multipart-manifest": "get"})
        resp = await self.app(get)
        if resp.status != 200 or not _is_slo(resp.headers):
            await resp.discard()
            if resp.status == 200:
                return await self.app(req)  # a plain object: a plain delete
            if resp.status == 404:
                raise SwiftError(404, "The resource could not be found.")
            return resp
        manifest = orjson.loads(await _read_bounded(resp, self.max_manifest_size + 65536))
        deleted = not_found = 0
        errors = []
        sem = asyncio.Semaphore(8)

        async def delete(seg):
            nonlocal deleted, not_found
            if "data" in seg:
                return  # inline bytes go with the manifest
            container, _, obj = seg["name"].lstrip("/").partition("/")
            query = {"multipart-manifest": "delete"} if seg.get("sub_slo") else {}
            sub = req.sub("DELETE", f"/{req.version}/{req.account}/{container}/{obj}",
                          query=query)
            async with sem:
                try:
                    r = await self(sub)
                    status = r.status
                    await r.discard()
                except SwiftError as exc:
                    status = exc.status
            if status // 100 == 2:
                deleted += 1
            elif status == 404:
                not_found += 1
            else:
                errors.append([quote(seg["name"]), str(status)])

        await asyncio.gather(*(delete(s) for s in manifest))
        try:
            r = await self.app(req.sub("DELETE", req.path))
            status = r.status
        except SwiftError as exc:
            status = exc.status
        if status // 100 == 2:
            deleted += 1
        elif status == 404:
            not_found += 1
        else:
            errors.append([quote(req.path), str(status)])
        report = {"Number Deleted": deleted, "Number Not Found": not_found,
                  "Response Status": "200 OK" if not errors else "400 Bad Request",
                  "Response Body": "", "Errors": errors}
        if "json" in req.headers.get("accept", ""):
            return Resp(200, {"content-type": "application/json"}, orjson.dumps(report))
        text = "".join(f"{k}: {v}\n" for k, v in report.items() if k != "Errors")
        text += "Errors:\n" + "".join(f"{n}, {s}\n" for n, s in errors)
        return Resp(200, {"content-type": "text/plain"}, text.encode())


async def _started(body):
    """``body`` with its first chunk already read: a large object whose first segment cannot
    be read (gone, or refused to the caller) is then answered with an error status (409, as
    Swift does) instead of a 200 cut short."""
    try:
        first = await body.__anext__()
    except StopAsyncIteration:
        return b""
    except BaseException:
        await body.aclose()
        raise

    async def rest():
        try:
            yield first
            async for chunk in body:
                yield chunk
        finally:
            await body.aclose()

    return rest()


def _part_number(req: Req) -> int | None:
    """The request's ``?part-number=`` (1-based), or None; 400 when it is not a positive
    integer or comes with a Range (one selects bytes, the other a manifest entry)."""
    raw = req.query.get("part-number")
    if raw is None:
        return None
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number <= 0:
        raise SwiftError(400, "Part number must be an integer greater than 0")
    if "range" in req.headers:
        raise SwiftError(400, "Range requests are not supported with part number queries")
    return number


def _is_slo(headers: dict) -> bool:
    return headers.get("x-static-large-object", "").lower() == "true"


def _is_large(headers: dict) -> bool:
    return _is_slo(headers) or "x-object-manifest" in headers


def _check_dlo_header(value: str) -> tuple[str, str]:
    value = unquote(header_text(value))
    container, sep, prefix = value.lstrip("/").partition("/")
    if not container or not sep:
        raise SwiftError(400, "X-Object-Manifest must be <container>/<prefix>")
    return container, prefix


def _slo_segment(seg: dict):
    """(container, object, start, end, etag, whole size); an inline segment is (None, its
    bytes, 0, length, None, length)."""
    if "data" in seg:
        data = base64.b64decode(seg["data"])
        return (None, data, 0, len(data), None, len(data))
    container, _, obj = seg["name"].lstrip("/").partition("/")
    size = int(seg["bytes"])
    if seg.get("range"):
        a, b = seg["range"].split("-")
        return (container, obj, int(a), int(b) + 1, None, size)
    return (container, obj, 0, size, seg.get("hash"), size)


async def _read_bounded(resp: Resp, limit: int) -> bytes:
    if isinstance(resp.body, (bytes, bytearray)):
        return bytes(resp.body)
    chunks, total = [], 0
    try:
        async for chunk in resp.body:
            total += len(chunk)
            if total > limit:
                raise SwiftError(503, "The manifest is larger than allowed")
            chunks.append(chunk)
    finally:
        if resp.on_close is not None:
            resp.on_close()
            resp.on_close = None
    return b"".join(chunks)


__all__ = ["LargeObjects", "parse_range", "check_conditions", "slo_etag", "urlencode"]
