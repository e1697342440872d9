"""Monitor history in the state database (``pgconn.history``): the core's ``HistoryStore`` port.

The monitor's leader writes one row per server per cycle (one INSERT, under its fence); the
housekeeper thins old rows (``model.history.TIERS``) and deletes what is past the retention, in
batches, any number of replicas side by side; commands read a server's period.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from bot.db.sql import state as sql
from bot.db.state import StateStore
from bot.model.history import RoleCount, Sample, thinning_plan
from bot.model.text import clean_name


class HistoryStore:
    """The core's ``HistoryStore`` port on the state database."""

    def __init__(self, state: StateStore) -> None:
        self._state = state

    @property
    def ready(self) -> bool:
        return self._state.ready

    async def record(self, sample: Sample, *, fence: tuple[uuid.UUID, int]) -> bool:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.INSERT_HISTORY, {**_row(sample), "me": fence[0], "epoch": fence[1]})
            return cur.rowcount == 1

    async def samples(
        self, targets: Sequence[str], since: timedelta, roles: Sequence[str] = ()
    ) -> tuple[datetime, list[Sample]]:
        async with self._state.connection() as conn:
            cur = await conn.execute(
                sql.HISTORY_SAMPLES,
                {"targets": list(targets), "since": since.total_seconds(), "roles": list(roles)},
            )
            rows = await cur.fetchall()
        now: datetime = rows[0]["now"]
        return now, [_sample(row) for row in rows if row["target"] is not None]

    async def thin(self, retention_seconds: float, batch: int = 100) -> dict[str, int]:
        """Delete what is past the retention, then merge old rows into coarser ones (TIERS): a
        statement per batch of buckets, done in the database (a backlog of weeks of rows for
        hundreds of roles never holds the bot's event loop); how many rows went, by kind."""
        trimmed = 0
        while True:
            async with self._state.connection() as conn:
                cur = await conn.execute(sql.TRIM_HISTORY, {"retention": retention_seconds, "batch": batch * 10})
            trimmed += max(0, cur.rowcount)
            if cur.rowcount < batch * 10:
                break
        merged = 0
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.HISTORY_CLOCK)
            row = await cur.fetchone()
        assert row is not None
        for cutoff, resolution in thinning_plan(row["now"]):
            while True:
                async with self._state.connection() as conn:
                    cur = await conn.execute(
                        sql.THIN_HISTORY, {"cutoff": cutoff, "resolution": resolution, "batch": batch}
                    )
                    done = await cur.fetchone()
                assert done is not None
                merged += int(done["replaced"]) - int(done["buckets"])
                if done["buckets"] < batch:  # fewer buckets were due than asked: this tier is done
                    break
        return {"history": trimmed, "history merged": merged}


def _row(sample: Sample) -> dict[str, Any]:
    return {
        "target": sample.target,
        "at": sample.at,
        "covers": sample.covers,
        "samples": sample.samples,
        "client_backends": sample.client_backends,
        "usable_slots": sample.usable_slots,
        "by_state": Jsonb(dict(sample.by_state)),
        "roles": Jsonb({role: [count.used, count.limit] for role, count in sample.roles.items()}),
    }


def _sample(row: dict[str, Any]) -> Sample:
    roles: dict[str, RoleCount] = {}
    for role, pair in (row["roles"] or {}).items():
        if isinstance(pair, list) and len(pair) == 2:
            roles[clean_name(str(role))] = RoleCount(int(pair[0]), int(pair[1]))
    return Sample(
        target=row["target"],
        at=row["at"],
        covers=float(row["covers"]),
        client_backends=int(row["client_backends"]),
        usable_slots=int(row["usable_slots"]),
        by_state={str(state): int(n) for state, n in (row["by_state"] or {}).items()},
        roles=roles,
        samples=int(row["samples"]),
    )
