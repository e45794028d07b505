"""Process-level knobs shared by the lean processes (object-store proxy and storage nodes)."""

from __future__ import annotations

import asyncio


def tune_malloc(*, arenas: int = 2, mmap_threshold: int | None = None) -> None:
    """glibc malloc settings (best effort; see ``mallopt(3)``).

    ``arenas``: glibc gives each thread that allocates its own arena, and freed buffers stay in
    them, so a process with an I/O thread pool would grow for nothing. ``mmap_threshold``: fixed,
    because glibc otherwise raises it after the first free of a large buffer and from then on
    serves such buffers from the heap, whose freed memory it keeps (the process stays at the
    size of its busiest moment); buffers above it are mapped and unmapped instead.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if mmap_threshold is not None:
            libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run_on_uvloop(main) -> None:
    """Run the coroutine ``main`` on uvloop. (``uvicorn.Config(loop=...)`` only applies when
    uvicorn creates the loop itself; our processes create it.)"""
    try:
        import uvloop
    except ImportError:  # uvloop comes with uvicorn[standard]; stay usable without it
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
