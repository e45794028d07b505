"""Storage node: object, container and account servers of one host, as one ASGI app.

A node serves the *devices* under its root directory (``<root>/<device>``, one per disk in
production; plain directories in tests). It is placed by the rings in ``ring_dir``
(``object.ring.gz``, ``container.ring.gz``, ``account.ring.gz``; a missing one falls back to
``object.ring.gz``), which also give the hash prefix/suffix that names files on disk. The node
finds its own devices in the rings by ``ip`` and ``port``.

Start one::

    python -m stratus.objectstore.storage --root /srv/node --ring-dir /etc/stratus \
        --ip 127.0.0.1 --port 6200 [--devices sda,sdb] [--replicator-interval 30 ...]

or from code: ``app = create_node_app(root, devices, ring_dir=..., port=...)`` (any ASGI
server), or ``await run_node(root, devices, ring_dir=..., port=...)`` (:mod:`.httpserver` with uvloop and
httptools).

Node API (internal; the proxy is its only client besides other nodes)
=====================================================================

Paths are ``/<device>/<partition>/<account>[/<container>[/<object>]]``, percent-encoded; the
proxy computes partition and devices from the ring. Which server answers follows the depth
(1 name: account, 2: container, 3: object) unless ``X-Backend-Server-Type`` says otherwise,
which is how *row updates* are addressed (below). Errors are ``text/plain`` with a reason.

Common statuses: 400 bad request, 404 not found, 409 a newer-or-equal timestamp already exists
(``X-Backend-Timestamp`` gives it), 507 device unmounted (missing directory or a
``.unmounted`` file in it) or, for writes, below ``reserve_bytes`` free: the proxy should use a
handoff.

Objects
-------
``PUT`` headers: ``X-Timestamp`` (the proxy's; last writer wins), ``Content-Length`` or
chunked body, optional ``ETag`` (md5 hex; 422 on mismatch), ``Content-Type``,
``X-Object-Meta-*``, ``X-Object-Sysmeta-*``, ``X-Delete-At``, ``Content-Encoding``,
``Content-Disposition``, ``X-Object-Manifest``, ``X-Static-Large-Object``...,
``If-None-Match: *`` (412 if the object exists on this node), and the listing
update targets ``X-Container-Host: ip:port[,ip:port]``, ``X-Container-Device: dev[,dev]``,
``X-Container-Partition``. → ``201`` with ``ETag``; the body is durable (fsync) by then. The
container update is awaited up to ``update_timeout`` and saved as a pending update otherwise.
``X-Backend-Md5-Trailer: 1`` (what the proxy sends with a streamed body, see
:mod:`stratus.objectstore.backend`): the body is chunked, its md5 comes in the trailer field
``X-Backend-Md5`` and is stored as the ETag without the node hashing the body again, and
``X-Backend-Obj-Content-Length`` gives its length (499 if the body differs). A missing or
malformed trailer, or the header with a ``Content-Length`` body, is a 400 and stores nothing.

``GET``/``HEAD`` → ``200`` with ``Content-Length``, ``Content-Type``, ``ETag``,
``X-Timestamp``, ``X-Backend-Timestamp``, ``Last-Modified``, stored headers (lower-case).
``Range: bytes=...`` → ``206`` (one range: ``Content-Range``; several:
``multipart/byteranges``, framed with the boundary ``X-Backend-Multipart-Boundary`` asks
for when it is 1-70 letters and digits: the proxy restarting such an answer on another replica
keeps the one the client was given) or ``416``. ``If-Match``, ``If-None-Match``,
``If-Modified-Since``, ``If-Unmodified-Since`` give ``412``/``304``. A deleted or expired
object → ``404`` with ``X-Backend-Timestamp`` of the tombstone (so the proxy can tell
"deleted" from "missing").
**Corruption:** every block is checked before it is sent; if one fails, the node
quarantines the replica and closes the connection *before* ``Content-Length`` bytes were sent.
A body shorter than ``Content-Length`` therefore means "this replica is bad, read another".
Multipart framing goes out only with the checked chunk that follows it, so a replica found bad
in the first block an answer needs has sent no body byte at all.
A replica found corrupt before the headers go out gives ``404``.

``DELETE`` (``X-Timestamp``, container update headers) → ``204``, or ``404`` if there was
nothing to delete (the tombstone is written anyway). ``X-If-Delete-At`` makes it conditional
(412). ``POST`` (``X-Timestamp``, replaces ``X-Object-Meta-*``, ``Content-Type``,
``X-Delete-At``...) → ``202``; ``404`` if the object does not exist.

Containers (``/dev/part/a/c``) and accounts (``/dev/part/a``)
------------------------------------------------------------
``PUT`` (``X-Timestamp``, ``X-Container-Meta-*``/``X-Container-Read``/... or
``X-Account-Meta-*``; ``X-Remove-...`` clears) → ``201`` created / ``202`` existed. A container
PUT/DELETE reports to the account servers named by ``X-Account-Host``/``-Device``/
``-Partition``. ``POST`` → ``204``. ``DELETE`` → ``204``, ``409`` if the container is not
empty. ``HEAD`` → ``204`` with ``X-Container-Object-Count``, ``X-Container-Bytes-Used``
(``X-Account-Container-Count``, ``-Object-Count``, ``-Bytes-Used``), ``X-Timestamp``,
``X-Put-Timestamp`` and the metadata. ``GET`` → ``200`` JSON listing with ``limit`` (≤ 10000),
``marker``, ``end_marker``, ``prefix``, ``delimiter``, ``reverse``; container items are
``{name, hash, bytes, content_type, last_modified}``, account items
``{name, count, bytes, last_modified}``, rolled-up names ``{subdir}``. The proxy renders
plain/XML.

Row updates: ``PUT|DELETE /dev/part/a/c/o`` with ``X-Backend-Server-Type: container``,
``X-Timestamp``, ``X-Size``, ``X-Content-Type``, ``X-Etag`` (object → container; 404 if the
container DB is not there), and ``PUT /dev/part/a/c`` with ``X-Backend-Server-Type: account``,
``X-Put-Timestamp``, ``X-Delete-Timestamp``, ``X-Object-Count``, ``X-Bytes-Used``,
``X-Timestamp`` (container → account; creates the account DB on first use). Object servers
batch their rows: ``POST /dev/part/a/c`` with ``X-Backend-Server-Type: container``,
``X-Backend-Row-Batch: 1`` and a msgpack list of ``[name, timestamp, size, content_type,
etag, deleted]`` (updater.RowBatcher).

Replication: ``REPLICATE`` (sent as ``POST`` + ``X-Backend-Replicate: 1``), and object
PUT/DELETE/POST carrying ``X-Backend-Replicated-Meta`` (a node pushing its exact file), see
replicator.py. Also ``GET /healthcheck`` → ``OK``, ``GET /recon`` → JSON device and daemon
statistics, ``POST /recon/run/<replicator|auditor|updater|expirer>`` → one pass now.

The proxy side of this API (fan-out with quorum, handoffs, failover reads, update targets)
is :mod:`stratus.objectstore.nodeclient`.

Background daemons (asyncio tasks in the node process, intervals configurable, 0 disables):
replicator.py, auditor.py, updater.py, expirer.py.
"""

from __future__ import annotations

from pathlib import Path

from .server import NodeConfig, StorageNode


def create_node_app(root: Path, devices: list[str] | None = None, *, ring_dir: Path,
                    ip: str = "127.0.0.1", port: int = 6200, **options) -> StorageNode:
    """The ASGI app of a storage node; ``options`` are :class:`NodeConfig` fields."""
    config = NodeConfig(root=Path(root), devices=devices, ring_dir=Path(ring_dir), ip=ip,
                        port=port, **options)
    return StorageNode(config)


async def run_node(root: Path, devices: list[str] | None = None, *, ring_dir: Path,
                   ip: str = "127.0.0.1", port: int = 6200, bind: str | None = None,
                   **options) -> None:
    """Serve a node until SIGINT/SIGTERM or cancellation (its own HTTP server on httptools,
    see :mod:`.httpserver` for why not uvicorn; uvloop when the caller runs one)."""
    from . import httpserver

    app = create_node_app(root, devices, ring_dir=ring_dir, ip=ip, port=port, **options)
    await httpserver.serve(app, bind or ip, port)


__all__ = ["NodeConfig", "StorageNode", "create_node_app", "run_node"]
