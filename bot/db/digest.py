"""The daily digest in the state database: the day's claim (one replica posts it) and the numbers."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

from bot.db.sql import state as sql
from bot.db.state import StateStore
from bot.model.digest import AlertSpan, Digest, RoleAtLimit
from bot.model.text import clean_name


class DigestStore:
    def __init__(self, state: StateStore, replica: uuid.UUID) -> None:
        self._state = state
        self._me = replica

    @property
    def ready(self) -> bool:
        return self._state.ready

    async def posted(self, day: date) -> bool:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.DIGEST_DONE, {"day": day})
            row = await cur.fetchone()
        return bool(row and row["posted"])

    async def claim(self, day: date) -> bool:
        """The day's digest is this replica's to post (no other has it, or its claim lapsed)."""
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.CLAIM_DIGEST, {"day": day, "me": self._me})
            return await cur.fetchone() is not None

    async def mark_posted(self, day: date, channel: str, ts: str | None) -> None:
        async with self._state.connection() as conn:
            await conn.execute(sql.DIGEST_POSTED, {"day": day, "me": self._me, "channel": channel, "ts": ts})

    async def release(self, day: date) -> None:
        """Not posted (Slack said no): another round may try again."""
        async with self._state.connection() as conn:
            await conn.execute(sql.RELEASE_DIGEST, {"day": day, "me": self._me})

    async def gather(self, day: date, since: datetime, until: datetime) -> Digest:
        window = {"since": since, "until": until}
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.DIGEST_ROLES, window)
            roles = tuple(
                RoleAtLimit(
                    target=r["target"],
                    role=clean_name(r["role"]),
                    times=int(r["times"]),
                    duration=r["duration"] or timedelta(0),
                    applications=tuple(
                        (clean_name(str(a.get("application") or "(none)")), int(a["n"]))
                        for a in r["applications"] or []
                        if isinstance(a, dict) and "n" in a
                    ),
                )
                for r in await cur.fetchall()
            )
            cur = await conn.execute(sql.DIGEST_REQUESTS, window)
            requests = {str(r["status"]): int(r["n"]) for r in await cur.fetchall()}
            cur = await conn.execute(sql.DIGEST_SESSIONS_ENDED, window)
            ended = await cur.fetchone()
            cur = await conn.execute(sql.DIGEST_ALERTS, window)
            alerts = tuple(
                AlertSpan(str(r["kind"]), int(r["n"]), r["longest"] or timedelta(0)) for r in await cur.fetchall()
            )
            cur = await conn.execute(sql.DIGEST_PEAK_FILL, window)
            peak = await cur.fetchone()
        return Digest(
            day=day,
            since=since,
            until=until,
            roles_at_limit=roles,
            requests=requests,
            sessions_ended=int(ended["n"]) if ended else 0,
            alerts=alerts,
            peak_fill=float(peak["fill"]) if peak and peak["fill"] is not None else None,
            peak_at=peak["at"] if peak else None,
        )
