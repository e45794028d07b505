"""Image stores: where image bytes live (``file`` by default, ``s3`` for any S3 endpoint)."""

from __future__ import annotations

from stratus.image.drivers.base import Store, StoreWriter


def create_store(name: str, cfg: dict, state_dir) -> Store:
    """The store named ``name`` configured from the ``[image]`` section."""
    if name == "file":
        from stratus.image.drivers.file import FileStore

        return FileStore(cfg.get("file_dir") or f"{state_dir}/images", fsync=bool(cfg.get("file_fsync", False)))
    if name == "s3":
        from stratus.image.drivers.s3 import S3Store

        return S3Store(endpoint_url=cfg.get("s3_endpoint_url") or None, bucket=cfg.get("s3_bucket") or "stratus-images",
                       access_key=cfg.get("s3_access_key") or None, secret_key=cfg.get("s3_secret_key") or None,
                       region=cfg.get("s3_region") or "us-east-1", prefix=cfg.get("s3_prefix", "images/"),
                       part_size=int(cfg.get("s3_part_size", 16 * 1024 * 1024)))
    if name == "objectstore":
        from stratus.image.drivers.objectstore import create

        return create(cfg, state_dir)
    raise ValueError(f"configuration key 'image.default_store' names unknown store {name!r} (known: file, s3, objectstore)")


__all__ = ["Store", "StoreWriter", "create_store"]
