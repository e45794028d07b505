"""Password and secret hashing with Argon2id (memory-hard), off the event loop.

The parameters default to the OWASP minimum (19 MiB, 2 passes, 1 lane); config may raise them.
Hashing runs in a thread pool: argon2-cffi releases the GIL, so two cores hash two passwords at
once while the event loop keeps serving validations.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Hasher:
    def __init__(self, memory_kib: int = 19456, time_cost: int = 2, parallelism: int = 1,
                 threads: int = 4):
        self.ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")

    async def hash(self, secret: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.ph.hash, secret)

    async def verify(self, encoded: str | None, secret: str) -> bool:
        if not encoded:
            return False

        def check() -> bool:
            try:
                return self.ph.verify(encoded, secret)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.get_running_loop().run_in_executor(self.pool, check)
