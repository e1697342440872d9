"""Role links and one-time link codes in the state database: the core's ``OwnershipStore`` port.

A link and its audit entry are written in one transaction (``RequestStore.append_audit``), so the
trail has every link that exists and every one that was removed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.db.requests import RequestStore
from bot.db.sql import state as sql
from bot.db.state import StateStore
from bot.model.audit import LinkNote, NewAuditEntry
from bot.model.ownership import LINK_CODE_TTL, LinkCode, LinkSource, OwnedRole


class OwnershipStore:
    def __init__(self, state: StateStore, requests: RequestStore) -> None:
        self._state = state
        self._requests = requests

    @property
    def ready(self) -> bool:
        return self._state.ready

    async def links_of(self, user_id: str) -> list[OwnedRole]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.LINKS_OF_USER, {"user_id": user_id})
            rows = await cur.fetchall()
        return [
            OwnedRole(
                target=r["target"],
                role=r["role_name"],
                source=LinkSource(r["source"]),
                since=r["created_at"],
                by=r["created_by"],
                role_oid=int(r["role_oid"]),
            )
            for r in rows
        ]

    async def linked_owners(self, target: str, role: str) -> list[str]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.LINKED_OWNERS, {"target": target, "role_name": role})
            return [r["user_id"] for r in await cur.fetchall()]

    async def link(
        self, user_id: str, target: str, role: str, role_oid: int, source: LinkSource, by: str, audit: NewAuditEntry
    ) -> bool:
        """Make the link (audited); False when it was there already, to that very role (nothing
        recorded). A link to an earlier role of that name is replaced."""
        params = _link(user_id, target, role) | {"role_oid": role_oid, "source": source, "created_by": by}
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.INSERT_LINK, params)
            if await cur.fetchone() is None:
                return False
            await self._requests.append_audit(audit, conn)
        return True

    async def unlink(self, user_id: str, target: str, role: str, audit: NewAuditEntry) -> LinkSource | None:
        """Remove the link (audited, the note saying how the removed link had been made); None
        when there was none."""
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.DELETE_LINK, _link(user_id, target, role))
            row = await cur.fetchone()
            if row is None:
                return None
            source = LinkSource(row["source"])
            await self._requests.append_audit(replace(audit, note=LinkNote(user_id, source)), conn)
        return source

    async def issue_code(
        self, code: str, user_id: str, target: str, role: str, role_oid: int, *, max_pending: int
    ) -> LinkCode | None:
        """Store a new code; None when the person has ``max_pending`` codes waiting already."""
        async with self._state.transaction() as conn:
            await conn.execute(sql.LINK_CODE_GATE, {"user_id": user_id})
            await conn.execute(sql.FORGET_OLD_LINK_CODES, {"user_id": user_id})
            cur = await conn.execute(sql.PENDING_LINK_CODES_OF_USER, {"user_id": user_id})
            if len(await cur.fetchall()) >= max_pending:
                return None
            ttl = LINK_CODE_TTL.total_seconds()
            params = _link(user_id, target, role) | {"code": code, "role_oid": role_oid, "ttl": ttl}
            cur = await conn.execute(sql.INSERT_LINK_CODE, params)
            row = await cur.fetchone()
        assert row is not None
        return _code(row)

    async def pending_codes(self, user_id: str | None = None) -> list[LinkCode]:
        async with self._state.connection() as conn:
            if user_id is None:
                cur = await conn.execute(sql.PENDING_LINK_CODES)
            else:
                cur = await conn.execute(sql.PENDING_LINK_CODES_OF_USER, {"user_id": user_id})
            return [_code(r) for r in await cur.fetchall()]

    async def use_code(self, code: LinkCode, audit: NewAuditEntry) -> bool:
        """The proof seen: the code used up and its user linked, in one transaction (once: two
        replicas seeing the same session link it once)."""
        async with self._state.transaction() as conn:
            params = _link(code.user_id, code.target, code.role) | {"role_oid": code.role_oid}
            cur = await conn.execute(sql.USE_LINK_CODE, params | {"code": code.code})
            if await cur.fetchone() is None:
                return False
            cur = await conn.execute(sql.INSERT_LINK, params | {"source": LinkSource.LOGIN, "created_by": code.user_id})
            if await cur.fetchone() is not None:
                await self._requests.append_audit(audit, conn)
        return True


def _link(user_id: str, target: str, role: str) -> dict[str, Any]:
    return {"user_id": user_id, "target": target, "role_name": role}


def _code(row: dict[str, Any]) -> LinkCode:
    return LinkCode(
        code=row["code"],
        user_id=row["user_id"],
        target=row["target"],
        role=row["role_name"],
        expires_at=row["expires_at"],
        role_oid=int(row["role_oid"]),
    )
