"""A lean closed-loop HTTP/1.1 load generator for the benchmarks: N keep-alive connections on
one asyncio (uvloop) loop, each posting pre-built requests back to back.

    latencies_s, errors, wall_s = load("http://127.0.0.1:8000", "/v1/score", bodies, connections=64, seconds=5)

Why not httpx in threads (what bench/rewards_bench.py used before): on this 2-core machine 64
httpx client threads topped out at ~1,500 requests/s against a server that answers a constant
body (1.25 cores of client, GIL-bound), and their own scheduling put a 136 ms p99 on that
trivial server — the client, not the service, was measured. This one spends ~0.05 core at the
reward service's rates. Latency is from writing a request to reading the last byte of its
response. The server must answer with Content-Length (Starlette does); a chunked or broken
response ends that connection and is counted as an error.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Sequence
from urllib.parse import urlsplit

Check = Callable[[bytes], "str | None"]  # response body → why it is wrong, None when fine


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError(f"HTTP {status} response without Content-Length")
    return status, await reader.readexactly(length)


async def _run(url: str, path: str, bodies: Sequence[bytes], connections: int, seconds: float,
               check: Check | None) -> tuple[list[float], list[str], float]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    requests = [_request(host, port, path, b) for b in bodies]
    conns = [await asyncio.open_connection(host, port) for _ in range(connections)]
    for i, (reader, writer) in enumerate(conns):  # warm-up: one request per connection
        writer.write(requests[i % len(requests)])
        await _read_response(reader)
    latencies: list[float] = []
    errors: list[str] = []
    t_start = time.perf_counter()
    t_end = t_start + seconds

    async def client(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent = i
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            writer.write(requests[sent % len(requests)])
            sent += 1
            try:
                status, data = await _read_response(reader)
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                latencies.append(time.perf_counter() - t0)
                errors.append(f"{type(exc).__name__}: {exc}")
                return  # the connection is in an unknown state
            latencies.append(time.perf_counter() - t0)
            why = f"HTTP {status}: {data[:100]!r}" if status != 200 else (check(data) if check else None)
            if why:
                errors.append(why)

    await asyncio.gather(*(client(i, r, w) for i, (r, w) in enumerate(conns)))
    wall = time.perf_counter() - t_start
    for _, writer in conns:
        writer.close()
    return latencies, errors, wall


def load(url: str, path: str, bodies: Sequence[bytes], connections: int, seconds: float,
         check: Check | None = None) -> tuple[list[float], list[str], float]:
    """Closed loop for `seconds`: → (latency of every request in s, error descriptions, wall s)."""
    try:
        from uvloop import run
    except ImportError:  # uvicorn[standard] brings uvloop; plain asyncio works too, a little slower
        run = asyncio.run
    return run(_run(url, path, bodies, connections, seconds, check))
