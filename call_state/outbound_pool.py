"""Connection pools for outbound requests: one per destination name, a bounded number of them.

`call_state.outbound` sends each request to the address it checked (the URL's host replaced by the IP, the
original name kept in the Host header and TLS SNI). httpx pools connections by URL origin, i.e. by IP, so with
one shared pool a connection opened (and certificate-verified) for `a.example.com` could carry a request for
`b.example.com` when both sit behind the same load balancer: servers answer that with 421 Misdirected Request,
or worse route it. So each destination (scheme, host, port) gets its own pool, keyed inside by IP: a connection
is reused only for the name it was verified for, at the address that name was checked at.

At most `max_pools` pools are kept; the least recently used idle one is closed to make room, and if every pool
is busy the request gets a one-off transport, closed after it. Pools belong to one event loop (Lambda may run
each invocation on a new one); a new loop starts a fresh set.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

PoolKey = tuple[str, str, int]  # scheme, host as written, port

DEFAULT_MAX_POOLS = 32
_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=8, keepalive_expiry=30.0)


@dataclass
class _Pool:
    transport: httpx.AsyncHTTPTransport
    leases: int = 0


class DestinationPools:
    def __init__(self, ssl_context: ssl.SSLContext | None = None, max_pools: int = DEFAULT_MAX_POOLS) -> None:
        self._ssl_context = ssl_context
        self._max_pools = max_pools
        self._pools: OrderedDict[PoolKey, _Pool] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._pools)

    def _new_transport(self) -> httpx.AsyncHTTPTransport:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()  # certifi's roots, loaded once
        return httpx.AsyncHTTPTransport(verify=self._ssl_context, http1=True, http2=False, retries=0, limits=_LIMITS)

    @asynccontextmanager
    async def lease(self, key: PoolKey) -> AsyncIterator[httpx.AsyncBaseTransport]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._pools.clear()  # connections of another loop cannot be used (or closed) from this one
            self._loop = loop
        pool = self._pools.get(key)
        if pool is None and len(self._pools) >= self._max_pools:
            await self._evict_idle()
        if pool is None and len(self._pools) < self._max_pools:
            pool = self._pools[key] = _Pool(self._new_transport())
        if pool is None:
            one_off = self._new_transport()
            try:
                yield one_off
            finally:
                await one_off.aclose()
            return
        self._pools.move_to_end(key)
        pool.leases += 1
        try:
            yield pool.transport
        finally:
            pool.leases -= 1

    async def _evict_idle(self) -> None:
        for key, pool in self._pools.items():  # oldest first
            if pool.leases == 0:
                del self._pools[key]
                await pool.transport.aclose()
                return

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.transport.aclose()
