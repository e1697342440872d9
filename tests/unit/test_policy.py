"""Identity → role, including user groups and their cache."""

from __future__ import annotations

import pytest

from bot.core.commands import Command, Help, ListConnections, RequestSignal
from bot.core.policy import CachedGroups, Policy, authorise
from bot.model.access import AccessRole, Identity
from bot.render.text import render_text


class Directory:
    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups
        self.lookups: dict[str, int] = {}
        self.failing = False

    async def members(self, group_id: str) -> frozenset[str]:
        self.lookups[group_id] = self.lookups.get(group_id, 0) + 1
        if self.failing:
            raise RuntimeError("slack is down")
        return frozenset(self.groups.get(group_id, set()))


def policy(directory: Directory, default: AccessRole = AccessRole.NONE, clock: list[float] | None = None) -> Policy:
    now = clock or [0.0]
    return Policy(
        viewers=("U0VIEW", "S0VIEWERS"),
        requesters=("U0TA",),
        approvers=("U0PROF", "S0DBAS"),
        default_role=default,
        groups=CachedGroups(directory, ttl=60, clock=lambda: now[0]),
    )


async def test_roles_from_users_and_groups_highest_wins() -> None:
    directory = Directory({"S0DBAS": {"U0DBA", "U0VIEW"}, "S0VIEWERS": {"U0STUDENT"}})
    p = policy(directory)
    assert await p.role_of(Identity("U0PROF")) is AccessRole.APPROVER
    assert await p.role_of(Identity("U0DBA")) is AccessRole.APPROVER
    assert await p.role_of(Identity("U0VIEW")) is AccessRole.APPROVER  # also in an approver group
    assert await p.role_of(Identity("U0TA")) is AccessRole.REQUESTER
    assert await p.role_of(Identity("U0STUDENT")) is AccessRole.VIEWER
    assert await p.role_of(Identity("U0NOBODY")) is AccessRole.NONE


async def permits(p: Policy, who: str, command: Command) -> bool:
    return authorise(await p.standing(Identity(who)), command) is None


async def test_permits_follows_the_command_and_default_role() -> None:
    p = policy(Directory({}), default=AccessRole.VIEWER)
    assert await permits(p, "U0X", ListConnections(role="bob"))
    assert not await permits(p, "U0X", RequestSignal(pids=(1,)))
    assert await permits(p, "U0TA", RequestSignal(pids=(1,)))
    none = policy(Directory({}), default=AccessRole.NONE)
    assert await permits(none, "U0X", Help())
    assert not await permits(none, "U0X", ListConnections(role="bob"))


async def test_group_members_are_cached_for_a_minute() -> None:
    directory = Directory({"S0DBAS": {"U0DBA"}})
    clock = [0.0]
    p = policy(directory, clock=clock)
    await p.role_of(Identity("U0DBA"))
    await p.role_of(Identity("U0DBA"))
    assert directory.lookups == {"S0DBAS": 1}
    directory.groups["S0DBAS"] = set()
    clock[0] = 59.0
    assert await p.role_of(Identity("U0DBA")) is AccessRole.APPROVER  # still cached
    clock[0] = 61.0
    assert await p.role_of(Identity("U0DBA")) is AccessRole.NONE
    assert directory.lookups == {"S0DBAS": 2, "S0VIEWERS": 1}


async def test_a_failed_lookup_grants_nothing_new_and_keeps_the_last_answer() -> None:
    directory = Directory({"S0DBAS": {"U0DBA"}})
    clock = [0.0]
    p = policy(directory, clock=clock)
    assert await p.role_of(Identity("U0DBA")) is AccessRole.APPROVER
    directory.failing = True
    clock[0] = 61.0
    assert await p.role_of(Identity("U0DBA")) is AccessRole.APPROVER  # last good answer stands
    never_resolved = Directory({"S0DBAS": {"U0DBA"}})
    never_resolved.failing = True
    fresh = policy(never_resolved)
    assert await fresh.role_of(Identity("U0DBA")) is AccessRole.NONE
    await fresh.role_of(Identity("U0DBA"))
    # one attempt per group, then it backs off instead of calling Slack on every command
    assert never_resolved.lookups == {"S0DBAS": 1, "S0VIEWERS": 1}


@pytest.mark.parametrize(
    ("seconds_since_confirmed", "slack_answers", "expected"),
    [
        (30, False, AccessRole.APPROVER),  # cached, not even asked
        (61, False, AccessRole.APPROVER),  # stale but within two minutes: a hiccup locks nobody out
        (120, False, AccessRole.APPROVER),
        (121, False, AccessRole.NONE),  # confirmed too long ago: grants nothing (fail closed)
        (3600, False, AccessRole.NONE),
        (3600, True, AccessRole.APPROVER),  # Slack answers again: confirmed again
    ],
)
async def test_membership_confirmed_too_long_ago_grants_nothing(
    seconds_since_confirmed: float, slack_answers: bool, expected: AccessRole
) -> None:
    directory = Directory({"S0DBAS": {"U0DBA"}})
    clock = [0.0]
    p = policy(directory, clock=clock)
    assert await p.role_of(Identity("U0DBA")) is AccessRole.APPROVER
    directory.failing = not slack_answers
    clock[0] = seconds_since_confirmed
    standing = await p.standing(Identity("U0DBA"))
    assert standing.role is expected
    if expected is AccessRole.APPROVER:
        assert standing.unconfirmed == ()
    else:  # both groups would have granted more than "none"
        assert standing.unconfirmed == ("S0DBAS", "S0VIEWERS")


async def test_the_refusal_says_why_a_group_counts_for_nothing() -> None:
    directory = Directory({"S0DBAS": {"U0DBA"}})
    clock = [0.0]
    p = policy(directory, clock=clock, default=AccessRole.VIEWER)
    await p.role_of(Identity("U0DBA"))
    directory.failing = True
    clock[0] = 500.0
    standing = await p.standing(Identity("U0DBA"))
    refused = authorise(standing, RequestSignal(pids=(1,)))
    assert refused is not None and standing.role is AccessRole.VIEWER
    message = render_text(refused)
    assert "user group S0DBAS could not be confirmed with Slack for over 2 minutes" in message
