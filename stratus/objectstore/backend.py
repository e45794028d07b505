"""What the proxy and the storage nodes agree on beyond plain HTTP, in a module light enough
for both (the proxy does not import the node's code).

A streamed object PUT from the proxy carries its body's md5 in a trailer instead of having
every replica compute it: md5 is most of a node's CPU on a large upload (3 replicas, 3 md5s of
the same bytes on the same host, 0.3 s each per 256 MiB here), and the proxy sees every byte
once anyway. The request says so up front (a node must know before the first byte whether to
hash it), is chunked (trailers need it), and gives the length it will send, which a chunked
body does not. A node still computes its own block sums (xxh3, what reads are checked
against) from the bytes it received, and the auditor checks the whole file's md5 against the
stored ETag, so a body that changed between proxy and disk is still caught and quarantined.
"""

from __future__ import annotations

MD5_TRAILER_REQUEST = "x-backend-md5-trailer"          # request header, value "1"
MD5_TRAILER = "x-backend-md5"                           # trailer field: the body's md5, hex
OBJ_CONTENT_LENGTH = "x-backend-obj-content-length"     # the length of that chunked body

# A multi-range GET resumed on another replica must frame its parts with the boundary the
# client was already given (in the first replica's Content-Type); the proxy asks for it.
MULTIPART_BOUNDARY = "x-backend-multipart-boundary"    # request header: the boundary to use

_HEX = frozenset("0123456789abcdef")
_BOUNDARY_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def valid_boundary(value: str | None) -> bool:
    """A boundary a node may use as asked: 1-70 letters and digits (RFC 2046 allows more;
    the nodes only ever make hex ones)."""
    return bool(value) and len(value) <= 70 and _BOUNDARY_CHARS.issuperset(value)


def trailer_md5(trailers: list | None) -> str | None:
    """The md5 a sender put in the body's trailer (:data:`MD5_TRAILER`; ``trailers`` as the
    node's HTTP server gives them: ``[(lower-case name, value)]``, bytes), lower-case hex, or
    None when it is missing or not 32 hex digits."""
    wanted = MD5_TRAILER.encode()
    for name, value in trailers or ():
        if name == wanted:
            digest = value.decode("latin-1").strip().lower()
            return digest if len(digest) == 32 and _HEX.issuperset(digest) else None
    return None

# What an object's container listing row shows instead of its own size and ETag. Kept as
# object sysmeta, so that a POST and replication keep it, and read by the node that sends the
# row. An SLO manifest's row shows the large object's size and the ETag
# "<manifest md5>; slo_etag=<large object ETag>", whose parameter a listing shows as a key of
# its own ("hash" and "slo_etag", as Swift's listings do).
LISTING_SIZE = "x-object-sysmeta-container-update-override-size"
LISTING_ETAG = "x-object-sysmeta-container-update-override-etag"


def listing_etag_fields(stored: str) -> dict:
    """A listing row's stored ETag as listing keys: ``{"hash": ...}`` plus one key per
    ``; name=value`` parameter (``slo_etag``)."""
    value, *params = stored.split(";")
    fields = {"hash": value.strip()}
    for param in params:
        name, sep, val = param.strip().partition("=")
        if sep and name and name != "hash":
            fields[name] = val.strip()
    return fields
