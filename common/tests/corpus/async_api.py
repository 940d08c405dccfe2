import asyncio
from typing import AsyncIterator


async def fetch(url: str, *, timeout: float = 10.0, retries: int = 3) -> bytes:
    """Fetch `url` and return the body."""
    await asyncio.sleep(0)
    return b""


async def stream_lines(path: str, chunk_size: int = 1 << 16) -> AsyncIterator[str]:
    """Yield the lines of `path` as they are read."""
    yield ""


def retry(times):
    def deco(fn):
        async def wrapper(*a, **k):
            for _ in range(times):
                try:
                    return await fn(*a, **k)
                except OSError:
                    pass
        return wrapper
    return deco


@retry(times=3)
async def ping(host, port=80):
    '''Open a TCP connection and close it.'''
    reader, writer = await asyncio.open_connection(host, port)
    writer.close()


def sync_helper(x):
    return x
