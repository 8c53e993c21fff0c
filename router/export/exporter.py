"""`router ledger export`: every client's ledger stream into the configured sinks, then trimmed.

Round after round, for each client scope (every configured client's, and any other ledger
stream found in Redis): read a batch through the consumer group (entries read before and
never acknowledged first), write it to every sink in turn (PostgreSQL, then JSONL), and only
once every sink has durably written it acknowledge it and trim the stream up to the first
entry not yet acknowledged. A failure leaves the batch pending: it is counted, that scope
backs off (0.5 s doubling to 30 s) and the same batch comes again, each sink skipping what it
already holds; the other scopes go on exporting meanwhile, so one client's batch that a sink
refuses never lets every other client's stream grow until Redis is full. So a record is never
lost to a crash (it stays in Redis until written everywhere) and never written twice (the
sinks ignore a settlement key they hold).

Run it as ONE process (a Deployment with one replica): see state/redis/stream.py. SIGTERM
and SIGINT let the batch in hand finish, then it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from .. import limits, logs, metrics
from ..config import Config, LedgerSinks
from ..state import StateError
from ..state.redis.stream import LedgerStreams, entry_ms, open_streams
from .entries import Record, Sink, SinkError, decode
from .jsonl import JsonlSink
from .postgres import PostgresSink

log = logging.getLogger("router.export")

IDLE = 1.0
"""Seconds between rounds that found nothing to export."""
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
DISCOVER_EVERY = 60.0
"""Seconds between looks for ledger streams of clients no longer configured."""
GAUGES_EVERY = 2.0
"""Seconds between updates of the lag and Redis memory gauges."""


class ExportFailed(Exception):
    """`--once`: a batch failed; its records stay in Redis for the next run."""


DISCOVERY = "(discovery)"
"""What failed, in logs, when the look for ledger streams did (it backs off like a scope)."""


def sinks_of(ledger: LedgerSinks) -> list[Sink]:
    found: list[Sink] = []
    if ledger.postgres:
        found.append(PostgresSink(ledger.postgres, ledger.table))
    if ledger.jsonl:
        found.append(JsonlSink(ledger.jsonl))
    return found


def configured_scopes(config: Config) -> set[str]:
    """Every client's scope (none configured: the one anonymous scope). Not `demo_only`
    clients: the config is read as --demo reads it, and those never reach a real deployment."""
    return set(limits.client_scopes(c for c in config.clients if not c.demo_only))


def backoff(failures: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(failures - 1, 0)))


async def export(config: Config, *, once: bool = False) -> None:
    """Run the exporter for `config` until SIGTERM (or, with `once`, until nothing is left)."""
    streams = open_streams(config.state.url)
    sinks = sinks_of(config.ledger)
    exporter = Exporter(streams, sinks, configured_scopes(config), batch=config.ledger.batch)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, exporter.stop)
    logs.event(
        log, logging.INFO, "ledger export: started",
        sinks=[s.name for s in sinks], batch=config.ledger.batch, once=once,
    )  # fmt: skip
    try:
        await exporter.run(once=once)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        for sink in sinks:
            await sink.aclose()
        await streams.aclose()
    logs.event(log, logging.INFO, "ledger export: stopped")


class Exporter:
    def __init__(
        self,
        streams: LedgerStreams,
        sinks: Sequence[Sink],
        scopes: set[str],
        *,
        batch: int,
        idle: float = IDLE,
    ):
        self._streams = streams
        self._sinks = list(sinks)
        self._scopes = set(scopes)
        self._batch = batch
        self._idle = idle
        self._stop = asyncio.Event()
        self._grouped: set[str] = set()
        self._untrimmed: set[str] = set()
        """Scopes that may hold acknowledged entries: one whose trim failed, and every scope at
        start and at each look for streams (a predecessor may have died between XACK and XTRIM)."""
        self._failures: dict[str, int] = {}
        """Failures in a row of each scope (and of DISCOVERY) that has not succeeded since."""
        self._retry_at: dict[str, float] = {}
        """When each failing scope is tried again (loop time); with `once`, never."""
        self._next_gauges = 0.0
        for sink in self._sinks:  # present at zero, so rate() and alerts see the series from the start
            metrics.LEDGER_EXPORTED.labels(sink.name)
            metrics.LEDGER_EXPORT_FAILURES.labels(sink.name)

    def stop(self) -> None:
        """Finish the batch in hand, then return from run()."""
        self._stop.set()

    async def run(self, *, once: bool = False) -> None:
        """Export until stop() (with `once`, until nothing is left; then ExportFailed if any
        batch failed, after every other scope was exported)."""
        loop = asyncio.get_running_loop()
        first_error: str | None = None
        while not self._stop.is_set():
            failed = moved = 0
            if self._due(DISCOVERY, loop):
                try:
                    found = await self._streams.scopes()
                except StateError as error:
                    failed += 1
                    first_error = first_error or self._failed(DISCOVERY, error, loop, once=once)
                else:
                    self._untrimmed |= found | self._scopes - self._grouped
                    self._scopes |= found
                    self._succeeded(DISCOVERY)
                    self._retry_at[DISCOVERY] = loop.time() + DISCOVER_EVERY
            for scope in sorted(self._scopes):
                if self._stop.is_set():
                    break
                if not self._due(scope, loop):
                    continue
                try:
                    moved += await self._export(scope)
                except (StateError, SinkError) as error:
                    failed += 1
                    first_error = first_error or self._failed(scope, error, loop, once=once)
                    continue
                self._succeeded(scope)
            await self._gauges(force=bool(failed) or (once and not moved))
            if not moved:
                if once:
                    if first_error is not None:
                        raise ExportFailed(first_error)
                    return
                await self._pause(self._wait(loop))

    def _due(self, scope: str, loop: asyncio.AbstractEventLoop) -> bool:
        return loop.time() >= self._retry_at.get(scope, 0.0)

    def _wait(self, loop: asyncio.AbstractEventLoop) -> float:
        """Seconds to sleep after a round that moved nothing: until the next retry, at most IDLE."""
        return max(0.0, min([self._idle, *(at - loop.time() for at in self._retry_at.values())]))

    def _failed(self, scope: str, error: Exception, loop: asyncio.AbstractEventLoop, *, once: bool) -> str:
        failures = self._failures[scope] = self._failures.get(scope, 0) + 1
        wait = backoff(failures)
        self._retry_at[scope] = float("inf") if once else loop.time() + wait
        logs.event(
            log, logging.ERROR, "ledger export: failed; the batch stays pending and is retried",
            scope=scope, error=str(error), failures=failures, retry_in=wait,
        )  # fmt: skip
        return str(error)

    def _succeeded(self, scope: str) -> None:
        failures = self._failures.pop(scope, 0)
        self._retry_at.pop(scope, None)
        if failures:
            logs.event(log, logging.INFO, "ledger export: recovered", scope=scope, failures=failures)

    async def _export(self, scope: str) -> int:
        """One batch of one scope through every sink; how many entries it held."""
        if scope not in self._grouped:
            await self._streams.ensure_group(scope)
            self._grouped.add(scope)
        batch = await self._streams.read(scope, self._batch)
        if not batch.entries:
            if scope in self._untrimmed:
                await self._streams.trim(scope)
                self._untrimmed.discard(scope)
            return 0
        records = [r for r in (decode(scope, e) for e in batch.entries) if r is not None]
        if len(records) < len(batch.entries):
            logs.event(
                log, logging.ERROR, "ledger export: records deleted from the stream before their export",
                scope=scope, lost=len(batch.entries) - len(records),
            )  # fmt: skip
        if records:
            await self._write(records, redelivered=batch.redelivered)
        self._untrimmed.add(scope)
        await self._streams.ack(scope, [e.id for e in batch.entries])
        for sink in self._sinks:
            sink.acknowledged(records)
        await self._streams.trim(scope)
        self._untrimmed.discard(scope)
        return len(batch.entries)

    async def _write(self, records: list[Record], *, redelivered: bool) -> None:
        for sink in self._sinks:
            try:
                written = await sink.write(records, redelivered=redelivered)
            except SinkError as error:
                metrics.LEDGER_EXPORT_FAILURES.labels(sink.name).inc()
                raise SinkError(f"{sink.name}: {error}") from None
            metrics.LEDGER_EXPORTED.labels(sink.name).inc(written)

    async def _gauges(self, *, force: bool = False) -> None:
        """Export lag (the oldest entry not yet exported, over every scope) and Redis memory."""
        loop = asyncio.get_running_loop()
        if not force and loop.time() < self._next_gauges:
            return
        self._next_gauges = loop.time() + GAUGES_EVERY
        try:
            now = await self._streams.now_ms()
            lag = 0
            for scope in self._scopes:
                oldest = await self._streams.oldest(scope)
                if oldest is not None:
                    lag = max(lag, now - entry_ms(oldest))
            metrics.LEDGER_EXPORT_LAG.set(lag / 1000)
            used, limit = await self._streams.memory()
            metrics.REDIS_MEMORY_USED.set(used)
            metrics.REDIS_MEMORY_MAX.set(limit)
        except StateError:
            pass  # Redis is away: the failure that says so is logged and counted elsewhere

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake for a SIGTERM."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
