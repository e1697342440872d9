"""Who is asking, and what the bot lets them do."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Membership of a Slack user group last confirmed longer ago than this grants nothing (fail
# closed): someone removed from the approvers' group must not keep approving while Slack cannot
# be asked.
MAX_UNCONFIRMED_SECONDS = 120.0


class AccessRole(enum.IntEnum):
    """Bot roles, ordered: a higher role includes the lower ones."""

    NONE = 0
    VIEWER = 1
    REQUESTER = 2
    APPROVER = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Identity:
    """Who is asking. ``user_id`` is a Slack user ID, or a local name in the console."""

    user_id: str
    team_id: str | None = None
    display: str | None = None
    origin: str | None = None  # not Slack: where the action came from (e.g. "console, local user alice")


@dataclass(frozen=True)
class Standing:
    """Someone's role, and the groups that would have granted more had Slack confirmed them."""

    role: AccessRole
    unconfirmed: tuple[str, ...] = ()
