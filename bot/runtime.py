"""Wiring: settings → pools, state store, policy, service. Shared by every mode."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.config import Settings
from bot.core.commands import AccessRole
from bot.core.policy import GroupDirectory, NoGroupDirectory, Policy
from bot.core.service import CommandService, Thresholds
from bot.db.state import StateStore
from bot.db.targets import TargetPools

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    targets: TargetPools
    state: StateStore
    service: CommandService

    @classmethod
    def build(cls, settings: Settings, groups: GroupDirectory | None = None) -> Runtime:
        targets = TargetPools(
            settings.target_dsns(), command_timeout=settings.command_timeout, max_size=settings.pool_max_size
        )
        state = StateStore(settings.state_dsn())
        policy = Policy(
            viewers=settings.viewers,
            requesters=settings.requesters,
            approvers=settings.approvers,
            default_role=AccessRole[settings.default_role.upper()],
            groups=groups or NoGroupDirectory(),
        )
        service = CommandService(
            targets=targets,
            policy=policy,
            thresholds=Thresholds(settings.alert_utilization_warn, settings.alert_utilization_crit),
        )
        return cls(settings=settings, targets=targets, state=state, service=service)

    async def start(self, *, require_state: bool = True) -> None:
        await self.targets.open()
        await self.state.open()
        try:
            # Console mode carries on without state, so it should not wait long for it.
            await self.state.migrate(wait_seconds=10.0 if require_state else 2.0)
        except Exception as exc:
            if require_state:
                raise
            log.warning("state database unavailable (%s); read-only commands still work", exc)

    async def stop(self) -> None:
        await self.targets.close()
        await self.state.close()
