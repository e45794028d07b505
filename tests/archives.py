"""Tar archives built in memory, for the bulk-upload tests (unit and functional)."""

from __future__ import annotations

import io
import tarfile


def tar_archive(files: dict[str, bytes], compression: str = "", dirs=()) -> bytes:
    """A tar (``compression``: "", "gz" or "bz2") holding directory entries ``dirs`` first,
    then ``files`` (name → bytes)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:" + compression) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
