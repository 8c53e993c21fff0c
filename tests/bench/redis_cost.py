"""What one request costs a shared Redis: the figure to size it by.

The scenarios' Redis rows are measured with Redis sharing a core with the simulator and the
load generator, so its scripts' time there includes waiting for that core; one request at a
time, an idle core's wake-ups inflate it the other way. Here a fresh redis-server has a core to
itself and is kept busy: this process drives the router's own Ledger, Admission and Settlement (the full
profile's config: client limits and budget, provider-key limits and quota) through admission
and settlement, many requests at once, with no HTTP and no upstream in between. What Redis
spent on them (INFO commandstats), how many commands, and what memory each request left
behind (the ledger record, the settlement's done markers) are divided by the requests.

    python -m tests.bench.redis_cost [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from router import config as configuration
from router.admission import admit
from router.call import Call
from router.ledger import Ledger
from router.settlement import Settlement
from router.state import open_store
from router.types import Usage
from tests.bench.scenarios import SCRIPT_CALLS, commandstats
from tests.bench.servers import PROFILES, cpu_seconds, write_config
from tests.redis_rig import RedisServer

CONCURRENCY = 32
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Benchmark me."}]}
RAW = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Benchmark me."}]}'
USED = Usage(9, 12)


async def _requests(ledger: Ledger, n: int) -> None:
    """`n` requests one after another, each admitted, sent to its key and settled as answered."""
    config = ledger.config
    client = config.clients[0]
    (target,) = config.targets["gpt-4o"]
    for i in range(n):
        call = Call.of(f"req_{i}", BODY, RAW, client=client, targets=(target,), headers={}, idempotency=None)
        admission = admit(ledger, call)
        refused = await admission.reserve_key(target)
        assert refused is None, refused
        settlement = Settlement(ledger, admission, request_id=call.request_id, started=time.perf_counter())
        settled = settlement.close(target=target, status=200, outcome="completed", usage=USED)
        await ledger.finish(settled.work).done()


async def _drive(url: str, workdir: Path, requests: int, cores: set[int]) -> None:
    os.sched_setaffinity(0, cores)
    path = write_config(PROFILES["full"], {"fast": 1}, workdir, url, "-redis-cost")
    # A patient socket timeout: this counts what a request costs Redis, and a busy machine (the
    # suite on two workers) must not open the store's breaker and turn requests away meanwhile.
    config = configuration.load(path)
    config = dataclasses.replace(config, state=dataclasses.replace(config.state, timeout=2.0))
    failed: list[str] = []
    store = open_store(config.state, on_error=failed.append)
    ledger = Ledger(config, store)
    try:
        per_task = requests // CONCURRENCY
        await asyncio.gather(*(_requests(ledger, per_task) for _ in range(CONCURRENCY)))
    finally:
        await ledger.aclose()
        await store.store.aclose()
    if failed:  # the guard would have answered from local state: Redis did not see those
        raise SystemExit(f"Redis failed {len(failed)} steps (first: {failed[0]}); no figure")


def run(redis_core: int | None, driver_cores: set[int], requests: int = 20_000) -> dict[str, Any]:
    """Start a redis-server (pinned to `redis_core`), warm it, then measure `requests` requests."""
    if requests < CONCURRENCY:
        raise ValueError(f"at least {CONCURRENCY} requests, one per task")
    workdir = Path(tempfile.mkdtemp(prefix="router-redis-cost-"))
    redis = RedisServer().start()
    try:
        if redis_core is not None:
            os.sched_setaffinity(redis.pid or 0, {redis_core})
        with redis.client() as client:
            asyncio.run(_drive(redis.url, workdir, 1_000, driver_cores))  # scripts loaded, keys made
            before, memory = commandstats(client), int(client.info("memory")["used_memory"])
            cpu, began = cpu_seconds([redis.pid or 0]), time.perf_counter()
            asyncio.run(_drive(redis.url, workdir, requests, driver_cores))
            wall, cpu = time.perf_counter() - began, cpu_seconds([redis.pid or 0]) - cpu
            after, grown = commandstats(client), int(client.info("memory")["used_memory"]) - memory
    finally:
        redis.close()
        os.sched_setaffinity(0, driver_cores | ({redis_core} if redis_core is not None else set()))
    done = CONCURRENCY * (requests // CONCURRENCY)

    def delta(name: str, field: int) -> int:
        return after.get(name, (0, 0))[field] - before.get(name, (0, 0))[field]

    return {
        "requests": done,
        "concurrency": CONCURRENCY,
        "redis_us": sum(delta(name, 1) for name in SCRIPT_CALLS) / done,
        "scripts": sum(delta(name, 0) for name in SCRIPT_CALLS) / done,
        "commands": sum(delta(name, 0) for name in after if name not in SCRIPT_CALLS) / done,
        "redis_cpu_us": 1e6 * cpu / done,
        "redis_cpu_pct": 100 * cpu / wall,
        "bytes_kept": grown / done,
        "rps": done / wall,
    }


def lines(cost: dict[str, Any]) -> list[str]:
    # Sized by Redis's whole CPU (its process, from /proc), not the scripts' time alone: reading,
    # parsing and answering the round trips cost it too.
    capacity = f"~{1e6 / cost['redis_cpu_us']:,.0f}" if cost["redis_cpu_us"] > 0 else "(no CPU measured)"
    return [
        f"What a request costs Redis (full profile's admission and settlement, {cost['requests']:,} "
        f"requests, {cost['concurrency']} at once, no HTTP, {cost['rps']:,.0f} requests/s; Redis alone on a "
        f"core, {cost['redis_cpu_pct']:.0f} % busy):",
        f"  {cost['redis_cpu_us']:.0f} us of Redis CPU, {cost['redis_us']:.0f} of them in "
        f"{cost['scripts']:.2f} scripts running {cost['commands']:.0f} commands: one Redis core, all "
        f"busy, for {capacity} requests/s across all replicas",
        f"  {cost['bytes_kept']:.0f} bytes of Redis memory kept per request (its ledger record until "
        "trimmed, two done markers for state.retention)",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    if args.requests < CONCURRENCY:
        parser.error(f"--requests: at least {CONCURRENCY}")
    cores = sorted(os.sched_getaffinity(0))
    redis_core = cores[-1] if len(cores) >= 2 else None
    driver = set(cores[:-1]) if redis_core is not None else set(cores)
    for line in lines(run(redis_core, driver, args.requests)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
