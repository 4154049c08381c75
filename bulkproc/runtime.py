"""The running parts of one process, built and closed in order: store, heartbeat, client, limiter, runs,
streams, and the webhooks' deliverer."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .store import Store
from .upstream.client import DirectoryClient
from .web.streams import StreamSlots
from .work.batches import Jobs, process_id
from .work.heartbeat import Heartbeat
from .work.imports import Imports
from .work.rate_limit import Limiter, NoLimiter, RateLimiter
from .work.rows import SETTLE_FACTOR
from .work.webhooks import Deliverer, RetryPolicy, announcement


@dataclass
class Runtime:
    store: Store
    heartbeat: Heartbeat
    client: DirectoryClient
    limiter: Limiter
    jobs: Jobs
    imports: Imports
    streams: StreamSlots
    webhooks: Deliverer | None = None

    @classmethod
    def build(cls, config: dict[str, Any], instance_path: str, *, clock: Callable[[], float] = time.time) -> Runtime:
        """Everything a process needs to serve and run batches, from its settings."""
        store = Store(config["DATABASE_URL"] or default_database(instance_path), clock=clock)
        # Listings, activations and deletions share one window, as the upstream's other endpoints do.
        reads = config.get("READ_RATE")
        # Set once when the process stops: every back-off, rate-limit and settle wait returns early.
        stopping = threading.Event()
        heartbeat = Heartbeat(store, process_id(), config["LEASE_SECONDS"], stopping=stopping)
        client = DirectoryClient(
            config["HOSPITAL_API_BASE_URL"], connect_timeout=config["CONNECT_TIMEOUT"],
            read_timeout=config["READ_TIMEOUT"], max_attempts=config["MAX_ATTEMPTS"],
            pool_size=config["CONCURRENCY"] + 4, backoff=config["BACKOFF_SECONDS"],
            rate_limit_pause=config["RATE_LIMIT_PAUSE"], outage_grace=config["OUTAGE_GRACE"], sleep=stopping.wait,
            pacer=RateLimiter(store, *reads, kind="read", sleep=stopping.wait) if reads else None)
        limiter = (RateLimiter(store, *config["CREATE_RATE"], sleep=stopping.wait) if config["CREATE_RATE"]
                   else NoLimiter())
        jobs = Jobs(
            store, client, limiter=limiter, concurrency=config["CONCURRENCY"], lease_seconds=config["LEASE_SECONDS"],
            batch_deadline=config["BATCH_DEADLINE"], wake_timeout=config["WAKE_TIMEOUT"],
            settle_seconds=SETTLE_FACTOR * config["READ_TIMEOUT"] + config["CONNECT_TIMEOUT"],
            stopping=stopping, heartbeat=heartbeat)
        imports = Imports(
            jobs, batch_rows=config["MAX_ROWS"], rate=config["CREATE_RATE"],
            concurrency=config["CONCURRENCY"], creation_seconds=config.get("IMPORT_CREATION_SECONDS", 5.0))
        return cls(store, heartbeat, client, limiter, jobs, imports, StreamSlots(config["MAX_STREAMS"]),
                   _webhooks(config, store, jobs, stopping))

    def close(self) -> None:
        """Stop the runs (cutting waits short, imports first), the heartbeat (which renews until every
        run has ended) and the client, then the store."""
        self.jobs.close()
        self.store.close()


def _webhooks(config: dict[str, Any], store: Store, jobs: Jobs, stopping: threading.Event) -> Deliverer | None:
    """With a webhook URL: final states write their events, and this process delivers them until it stops."""
    if not config.get("WEBHOOK_URL"):
        return None
    store.announcement = announcement
    deliverer = Deliverer(store, config["WEBHOOK_URL"], config["WEBHOOK_SECRET"], stopping=stopping,
                          connect_timeout=config["CONNECT_TIMEOUT"],
                          # Tests make retries fast and looks frequent; the defaults are the contract's.
                          policy=config.get("WEBHOOK_RETRY_POLICY") or RetryPolicy(),
                          poll=config.get("WEBHOOK_POLL_SECONDS", 2.0))
    jobs.close_with(deliverer.close)  # once the runs' waits are cut short, like the imports
    return deliverer


def default_database(instance_path: str) -> str:
    """The SQLite job store of an app without DATABASE_URL: a file in its instance folder (made here)."""
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "bulkproc.sqlite3")
