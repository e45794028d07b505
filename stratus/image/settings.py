"""The ``[image]`` configuration section: defaults, types and checks with messages naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from stratus.config import ConfigError

TiB = 1024 ** 4


@dataclass
class ImageSettings:
    default_store: str = "file"
    # Per-project quotas; -1 means unlimited.
    image_count_total: int = 100
    image_size_total: int = TiB
    image_stage_total: int = TiB
    # The largest single image accepted (upstream image_size_cap).
    image_size_cap: int = TiB
    # Images whose header claims a larger virtual disk are refused.
    max_virtual_size: int = 2 * TiB
    # Hosts (or host:port) web-download may fetch from; empty disables web-download.
    web_download_allowed_hosts: list = field(default_factory=list)
    # Hash whole-image downloads on the way out and cut the connection if the stored data is corrupt.
    verify_downloads: bool = True
    page_size: int = 25
    max_page_size: int = 1000
    file_dir: str = ""
    file_fsync: bool = False
    staging_dir: str = ""
    s3_endpoint_url: str = ""
    s3_bucket: str = "stratus-images"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    s3_prefix: str = "images/"
    s3_part_size: int = 8 * 1024 * 1024
    # The object store (Swift API) as image store: container and segment size.
    objectstore_container: str = "images"
    objectstore_part_size: int = 32 * 1024 * 1024
    # Register the bootable test image as "stratus-test" at start when the builder is present.
    register_test_image: bool = True
    # Where the test image is built (cached); default <state_dir>/testimage. Test runs point every
    # cloud at one shared cache so it is built once.
    test_image_dir: str = ""

    @classmethod
    def from_section(cls, section: dict, state_dir: Path) -> "ImageSettings":
        known = {f.name: f for f in fields(cls)}
        out = cls()
        for key, value in section.items():
            if key not in known:
                raise ConfigError(f"unknown configuration key 'image.{key}' (known: {', '.join(sorted(known))})")
            default = getattr(out, key)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, list):
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ConfigError(f"configuration key 'image.{key}' must be {type(default).__name__}, got {value!r}")
            setattr(out, key, value)
        if out.default_store not in ("file", "s3", "objectstore"):
            raise ConfigError("configuration key 'image.default_store' must be 'file', 's3' or 'objectstore'")
        for key in ("image_size_cap", "max_virtual_size", "page_size", "max_page_size"):
            if getattr(out, key) <= 0:
                raise ConfigError(f"configuration key 'image.{key}' must be positive")
        for key in ("image_count_total", "image_size_total", "image_stage_total"):
            if getattr(out, key) < -1:
                raise ConfigError(f"configuration key 'image.{key}' must be -1 (unlimited) or a non-negative number")
        out.file_dir = out.file_dir or str(Path(state_dir) / "images")
        out.staging_dir = out.staging_dir or str(Path(state_dir) / "images-staging")
        out.test_image_dir = out.test_image_dir or str(Path(state_dir) / "testimage")
        return out

    def store_config(self) -> dict:
        return {k: getattr(self, k) for k in ("file_dir", "file_fsync", "s3_endpoint_url", "s3_bucket",
                                               "s3_access_key", "s3_secret_key", "s3_region", "s3_prefix",
                                               "s3_part_size", "objectstore_container",
                                               "objectstore_part_size")}
