"""Approval messages, audit entries and markers: what Slack and the console show."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bot.core.housekeeping import backoff
from bot.model.activity import RoleFill
from bot.model.audit import AuditEntry
from bot.model.requests import Approval, RequestTarget, SignalRequest, TargetOutcome
from bot.model.results import Decided, PendingRequests, RequestOpened
from bot.render.blocks import APPROVE_ACTION, DENY_ACTION, audit_message, render_blocks, request_message
from bot.render.markup import channel, mention, moment, to_plain, to_slack
from bot.render.text import render_text

NOW = datetime(2026, 11, 21, 10, 42, tzinfo=UTC)


def target(pid: int, **changes: object) -> RequestTarget:
    base = RequestTarget(
        pid=pid,
        backend_start=NOW - timedelta(hours=1),
        role_oid=16384,
        role="bob",
        database="course",
        application="DataGrip",
        client="10.0.0.7",
        state="idle",
        state_change=NOW - timedelta(minutes=40),
        xact_start=None,
        observed_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def request(**changes: object) -> SignalRequest:
    base = SignalRequest(
        id=12,
        action="terminate",
        scope="user",
        target="default",
        role_name="bob",
        older_than=None,
        reason="locked out before the exam",
        command_text="kill user bob",
        requester="U0TA",
        requester_name="ta",
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        now=NOW,
        status="pending",
        required_approvals=1,
        targets=(target(4711), target(4712, blocks=(4800, 4801))),
        fills=(RoleFill("bob", 5, 5),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def actions(message_blocks: list[dict[str, object]]) -> list[dict[str, object]]:
    return [b for b in message_blocks if b["type"] == "actions"]


def test_pending_request_has_approve_and_deny_with_only_the_id() -> None:
    message = request_message(request())
    (block,) = actions(message.blocks)
    approve, deny = block["elements"]  # type: ignore[misc]
    assert (approve["action_id"], approve["value"], approve["style"]) == (APPROVE_ACTION, "12", "primary")
    assert (deny["action_id"], deny["value"], deny["style"]) == (DENY_ACTION, "12", "danger")
    assert "Approve" in approve["text"]["text"] and "Deny" in deny["text"]["text"]
    confirm = approve["confirm"]
    assert "terminate all 2 sessions of bob" in confirm["text"]["text"]
    assert len(confirm["text"]["text"]) <= 300 and len(confirm["title"]["text"]) <= 100
    text = json.dumps(message.blocks)
    for expected in ("<@U0TA>", "locked out before the exam", "bob: 5/5", "4800,4801", "DataGrip", "40m"):
        assert expected in text, expected


def test_decided_requests_carry_no_buttons() -> None:
    for status in ("executed", "denied", "expired", "withdrawn", "interrupted", "executing"):
        assert actions(request_message(request(status=status, decided_by="U0DBA", decided_at=NOW)).blocks) == []
    # Past its TTL but not yet marked: no button either.
    assert actions(request_message(request(now=NOW + timedelta(hours=2))).blocks) == []


def test_executed_message_shows_each_outcome() -> None:
    done = request(
        status="executed",
        decided_by="U0DBA",
        decided_at=NOW,
        approvals=(Approval("U0DBA", NOW),),
        targets=(
            target(4711, outcome="terminated"),
            target(4712, outcome="replaced"),
            target(4713, outcome=TargetOutcome.FAILED, error="permission denied"),
        ),
    )
    text = json.dumps(request_message(done).blocks)
    assert "Approved by <@U0DBA>" in text
    assert "1 terminated" in text and "replaced by another session" in text and "permission denied" in text


def test_client_controlled_text_cannot_mention_or_forge_markers() -> None:
    nasty = request(targets=(target(1, application="<!channel> \x1d@U0BOSS\x1d `x`", role="bob"),))
    text = json.dumps(request_message(nasty).blocks)
    assert "<!channel>" not in text and "<@U0BOSS>" not in text and "&lt;!channel&gt;" in text


def test_markers_render_per_adapter() -> None:
    line = f"by {mention('U0TA')} in {channel('C0OPS')} at {moment(NOW)}"
    assert to_slack(line) == (
        "by <@U0TA> in <#C0OPS> at <!date^1795257720^{date_short_pretty} at {time}|2026-11-21 10:42 UTC>"
    )
    assert to_plain(line) == "by @U0TA in #C0OPS at 2026-11-21 10:42 UTC"
    assert to_plain(mention("local:alice")) == "local:alice"


def test_requester_answer_and_console_answer() -> None:
    slack = render_blocks(RequestOpened(request(), posted_in="C0APPROVE"))
    assert "Request #12 sent for approval in <#C0APPROVE>" in slack.blocks[0]["text"]["text"]
    console = render_text(RequestOpened(request(), posted_in=None, console=True))
    assert "approve 12" in console and "deny 12" in console and "Nothing is signalled" in console


def test_partial_approval_answer() -> None:
    partly = request(required_approvals=2, approvals=(Approval("U0DBA", NOW),))
    text = render_text(Decided(partly, "approval_recorded"))
    assert "recorded: 1 of 2" in text and "approved so far by @U0DBA" in text


def test_pending_list() -> None:
    text = render_text(PendingRequests([request(), request(id=13, action="cancel", scope="pids")]))
    assert "2 pending requests" in text and "#12" in text and "cancel the running query of 2 sessions" in text
    assert render_text(PendingRequests([])) == "No pending requests."


def test_audit_message_names_everything() -> None:
    entry = AuditEntry(
        id=1,
        at=NOW,
        event="executed",
        request_id=12,
        action="terminate",
        target="default",
        role_name="bob",
        pids=(4711, 4712),
        actor="U0DBA",
        requester="U0TA",
        approvers=("U0DBA",),
        outcome="4711 terminated, 4712 already gone",
        message_ref=None,
    )
    message = audit_message(entry, "C0APPROVE/1700000000.000001")
    for expected in ("#12", "executed", "terminate", "role bob", "4711, 4712", "<@U0TA>", "<@U0DBA>", "already gone"):
        assert expected in message.text, expected
    assert "archives/C0APPROVE/p1700000000000001" in message.text


def test_backoff_honours_retry_after_and_caps() -> None:
    assert backoff(1, None) == 1 and backoff(3, None) == 4 and backoff(30, None) == 300
    assert backoff(5, 7.0) == 7.0


def test_clipping_never_leaves_half_an_entity_or_token() -> None:
    from bot.render.blocks import _clip

    assert _clip("abc &amp; def", 7) == "abc …"
    assert _clip("see <@U0TA> now", 9) == "see …"
    assert _clip("short", 10) == "short"


def test_a_long_audit_listing_is_split_not_cut() -> None:
    entries = [
        AuditEntry(
            i, NOW, "requested", i, "terminate", "default", "bob" * 20, (1, 2, 3), "U0TA", "U0TA", (), "x" * 200, None
        )
        for i in range(1, 60)
    ]
    from bot.model.results import AuditTrail

    message = render_blocks(AuditTrail(entries, 59))
    assert all(len(b["text"]["text"]) <= 3000 for b in message.blocks if "text" in b)
    everything = json.dumps(message.blocks, ensure_ascii=False)
    assert "#59 · requested" in everything and "#1 · requested" in everything


def test_the_recheck_promise_and_the_fill_are_worded_for_where_the_request_stands() -> None:
    pending = render_text(RequestOpened(request(), posted_in=None, console=True))
    assert "Before signalling, each pid is checked again" in pending
    assert "bob: 5/5 — at the limit" in pending and "when requested" not in pending
    finished = [
        request(status="denied", decided_by="U0DBA", decided_at=NOW),
        request(status="expired"),
        request(now=NOW + timedelta(hours=2)),  # past its expiry, not yet marked
        request(status="withdrawn"),
        request(status="executed", decided_by="U0DBA", decided_at=NOW, approvals=(Approval("U0DBA", NOW),)),
    ]
    for done in finished:
        for text in (
            render_text(Decided(done, "denied")),
            json.dumps(request_message(done).blocks, ensure_ascii=False),
        ):
            assert "checked again" not in text, done.status
            assert "Request #12." in text
            assert "bob: 5/5 when requested — at the limit" in text, done.status
    unlimited = request(status="denied", fills=(RoleFill("bob", 1, -1),))
    assert "bob: 1 connection when requested, no limit" in render_text(Decided(unlimited, "denied"))
    locked = request(fills=(RoleFill("bob", 1, 0),))
    assert "bob: 1/0 — logins disabled for this role" in render_text(Decided(locked, "denied"))


def test_approval_counts_are_pluralised() -> None:
    from bot.model.problems import DecisionIssue, DecisionRefused
    from bot.render.problems import problem_text

    def more(n: int) -> str:
        return problem_text(DecisionRefused(12, DecisionIssue.ALREADY_APPROVED, more_needed=n))

    assert "needs 1 more approval from other approvers" in more(1)
    assert "needs 2 more approvals from other approvers" in more(2)
    assert "Waiting for 1 approval ·" in render_text(Decided(request(), "denied"))
    assert "Waiting for 2 approvals ·" in render_text(Decided(request(required_approvals=2), "denied"))
