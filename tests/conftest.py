"""Fixtures shared by every tier."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud


@pytest.fixture(scope="session")
def cloud():
    """The whole all-in-one cloud (every service present in this build) on SQLite."""
    state = Path(tempfile.mkdtemp(prefix="stratus-test-"))
    c = start_cloud(state)
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)
