"""What approval requests, decisions and audit entries say (both adapters lay these out)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import assert_never

from bot.model.activity import RoleFill
from bot.model.audit import (
    AlertAcknowledged,
    AlertSnoozed,
    AlertUnsnoozed,
    ApprovalCount,
    AuditEntry,
    AuditNote,
    ClickRefusal,
    Closed,
    Closure,
    DrainEnded,
    LinkNote,
    Outcomes,
    PostFailed,
    Reason,
    Refusal,
    RefusalsSummarised,
    SelfServiceNote,
)
from bot.model.drains import DrainRefused
from bot.model.durations import format_duration
from bot.model.ownership import LinkSource
from bot.model.problems import DecisionIssue, NotAllowed, TooManyRequests
from bot.model.requests import (
    AuditEvent,
    OutcomeNote,
    RequestStatus,
    RequestTarget,
    SignalOutcome,
    SignalRequest,
    TargetOutcome,
)
from bot.model.results import AuditTrail, Decided, PendingRequests, RequestOpened
from bot.model.servers import DEFAULT_TARGET
from bot.render.alerts import kind_text
from bot.render.document import Document, Table, Tone, on, on_console, one_line, plural, slash
from bot.render.drains import drain_refused_text, drain_took, what_drain
from bot.render.markup import channel, mention, moment, strip
from bot.render.problems import problem_text

MAX_PIDS_IN_LINE = 12

OUTCOME_LABELS = {
    TargetOutcome.TERMINATED: "terminated",
    TargetOutcome.CANCELLED: "cancelled",
    TargetOutcome.ESCALATED: "cancelled, then terminated",
    TargetOutcome.GONE: "already gone",
    TargetOutcome.REPLACED: "replaced by another session, not signalled",
    TargetOutcome.PROTECTED: "protected now, not signalled",
    TargetOutcome.CHANGED: "changed since the request, not signalled",
    TargetOutcome.FAILED: "failed",
    TargetOutcome.STILL_RUNNING: "signalled, still running",
}


_NOTES = {
    OutcomeNote.TIMED_OUT_WAITING: "timed out waiting",
    OutcomeNote.NEW_SESSION: "the pid now belongs to a different session",
    OutcomeNote.NOW_PROTECTED: "superuser (or a member of one), protected role (or a member of one), or the bot's own",
    OutcomeNote.QUERY_ENDED: "the query it was running has ended",
    OutcomeNote.ACTIVE_SINCE: "it has been active since",
    OutcomeNote.SERVER_DID_NOT_SIGNAL: "the server did not signal it",
}


def outcome_detail(note: OutcomeNote | None, error: str | None) -> str | None:
    """Why a target's outcome is what it is, in words (None when there is nothing to add)."""
    match note:
        case None:
            return error
        case OutcomeNote.LOST_WHILE_SIGNALLING:
            return f"{error} while signalling it; it may have been"
        case OutcomeNote.NOT_SIGNALLED:
            return f"not signalled: {error}"
    return _NOTES[note]


def _pid_list(pids: list[int]) -> str:
    shown = ", ".join(str(p) for p in pids[:MAX_PIDS_IN_LINE])
    return shown + (f" and {len(pids) - MAX_PIDS_IN_LINE} more" if len(pids) > MAX_PIDS_IN_LINE else "")


def what(request: SignalRequest) -> str:
    """``terminate 3 sessions of bob (pids 1, 2, 3)``: the sentence the approver agrees to."""
    roles = ", ".join(strip(r) for r in request.roles) or strip(request.role_name or "?")
    n = len(request.targets)
    where = on(request.target)
    if request.scope == "database":
        return what_drain(request)
    if request.action == "cancel":
        noun = "the running query of " + ("pid" if n == 1 else f"{n} sessions: pids")
        ladder = (
            f", then terminate any still running that query after {format_duration(request.escalate_after)}"
            if request.escalate_after is not None
            else ""
        )
        return f"cancel {noun} {_pid_list(request.pids)} ({roles}){where}{ladder}"
    if request.scope == "user":
        return f"terminate all {plural(n, 'session')} of {roles}{where} (pids {_pid_list(request.pids)})"
    if request.scope == "idle" and request.role_name is None:  # chosen by pid, from an alert
        if n == 1:
            return f"terminate pid {request.pids[0]} ({roles}){where} while it is still idle in its transaction"
        return f"terminate {n} idle sessions: pids {_pid_list(request.pids)} ({roles}){where}"
    if request.scope == "idle":
        idle = f" idle ≥ {format_duration(request.older_than)}" if request.older_than else " idle"
        sessions = "session" if n == 1 else "sessions"
        return f"terminate {n}{idle} {sessions} of {roles}{where} (pids {_pid_list(request.pids)})"
    if n == 1:
        return f"terminate pid {request.pids[0]} ({roles}){where}"
    return f"terminate {n} sessions: pids {_pid_list(request.pids)} ({roles}){where}"


def _fill(fill: RoleFill, *, open_: bool) -> str:
    """How full the role was when the request was made; once it is no longer open, said so."""
    role = strip(fill.role)
    then = "" if open_ else " when requested"
    if fill.limit < 0:
        return f"{role}: {plural(fill.used, 'connection')}{then}, no limit"
    if fill.logins_disabled:
        state = "logins disabled for this role"
    else:
        state = "at the limit" if fill.used >= fill.limit else f"{fill.limit - fill.used} left"
    return f"{role}: {fill.used}/{fill.limit}{then} — {state}"


def is_open(request: SignalRequest) -> bool:
    """Still to be decided (being posted, or pending and not past its expiry): nothing has been
    checked or signalled yet."""
    return request.pending or request.status is RequestStatus.POSTING


def _approvers(request: SignalRequest) -> str:
    return ", ".join(mention(a.approver) for a in request.approvals) or "no one yet"


def status_line(request: SignalRequest) -> str:
    done = ", ".join(f"{n} {label}" for label, n in _outcome_counts(request).items())
    match request.status:
        case RequestStatus.PENDING if request.pending:
            return (
                f"Waiting for approval: {len(request.approvals)} of {request.required_approvals} "
                f"(approved so far by {_approvers(request)}) · expires {moment(request.expires_at)}"
                if request.approvals
                else f"Waiting for {plural(request.required_approvals, 'approval')} · "
                f"expires {moment(request.expires_at)}"
            )
        case RequestStatus.PENDING | RequestStatus.EXPIRED:
            return f"Expired {moment(request.expires_at)} without approval — nothing was signalled."
        case RequestStatus.POSTING:
            return "Being posted for approval — nothing can be approved or signalled yet."
        case RequestStatus.EXECUTING:
            return f"Approved by {_approvers(request)} {_at(request)} — executing…"
        case RequestStatus.ESCALATING:
            left = max(timedelta(0), (request.escalate_at or request.now) - request.now)
            return (
                f"Approved by {_approvers(request)} {_at(request)} — {done}; escalating in "
                f"{format_duration(left) if left.total_seconds() >= 1 else 'a moment'}: a query still "
                "running then is terminated."
            )
        case RequestStatus.EXECUTED:
            took = drain_took(request) if request.scope == "database" else ""
            return f"Approved by {_approvers(request)} {_at(request)} — done{took}: {done or 'no sessions to end'}."
        case RequestStatus.DENIED:
            return f"Denied by {mention(request.decided_by)} {_at(request)} — nothing was signalled."
        case RequestStatus.INTERRUPTED:
            return (
                f"Approved by {_approvers(request)} {_at(request)}, but the bot stopped while executing; "
                f"check the sessions with {slash('list')}."
            )
        case RequestStatus.WITHDRAWN:
            return "Withdrawn: it could not be posted for approval — nothing was signalled."
        case _:
            assert_never(request.status)


def _at(request: SignalRequest) -> str:
    return f"at {moment(request.decided_at)}" if request.decided_at else ""


def _outcome_counts(request: SignalRequest) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in request.targets:
        label = OUTCOME_LABELS[t.outcome] if t.outcome is not None else "not run"
        if t.outcome is TargetOutcome.ESCALATED and request.escalate_after is not None:
            label += f" after {format_duration(request.escalate_after)}"
        counts[label] = counts.get(label, 0) + 1
    return counts


def _target_table(targets: tuple[RequestTarget, ...]) -> Table:
    headers = ["PID", "ROLE", "DATABASE", "APPLICATION", "CLIENT", "STATE", "IDLE", "XACT", "BLOCKS"]
    with_outcome = any(t.outcome for t in targets)
    if with_outcome:
        headers.append("OUTCOME")
    rows = []
    for t in targets:
        row = [
            str(t.pid),
            strip(t.role),
            strip(t.database or "—"),
            strip(one_line(t.application, 24)) or "(none)",
            t.client or "—",
            t.state or "—",
            format_duration(t.idle_for) if t.idle_for is not None else "active",
            format_duration(t.transaction_age) if t.transaction_age is not None else "—",
            ",".join(str(b) for b in t.blocks[:5]) + ("…" if len(t.blocks) > 5 else "") if t.blocks else "—",
        ]
        if with_outcome:
            label = OUTCOME_LABELS[t.outcome] if t.outcome is not None else "—"
            detail = outcome_detail(t.note, t.error)
            row.append(label + (f": {one_line(detail, 60)}" if detail else ""))
        rows.append(row)
    return Table(headers, rows)


def request_document(request: SignalRequest) -> Document:
    """The approval message: what, who, why, how full, the targets, and where it stands."""
    reason = f"“{request.reason}”" if request.reason else "no reason given"
    open_ = is_open(request)
    doc = Document(
        title=f"Request #{request.id}: {what(request)}",
        lines=[
            # Where it stands comes first: it is what every reader needs, and a long reason below
            # can then never push it out of the message.
            status_line(request),
            f"Requested by {mention(request.requester)} {f'at {moment(request.created_at)}'} · reason: {reason}",
            *(_fill(f, open_=open_) for f in request.fills),
        ],
        table=_target_table(request.targets),
        notes=[
            f"Request #{request.id}. Before signalling, each pid is checked again: same session (backend_start) "
            "and same role, or it is left alone."
            if open_
            else f"Request #{request.id}."
        ],
        tone=Tone.WARNING if request.status in (RequestStatus.PENDING, RequestStatus.EXECUTING) else Tone.INFO,
    )
    failed = [
        (t, detail) for t in request.targets if t.outcome == "failed" and (detail := outcome_detail(t.note, t.error))
    ]
    if failed:
        doc.notes.append(f"pid {failed[0][0].pid} failed: {failed[0][1]}")
    return doc


def confirm_text(request: SignalRequest) -> str:
    return f"pgconn-bot will {what(request)}, after checking each is still the same session."


def request_opened_document(result: RequestOpened) -> Document:
    request = result.request
    if result.console:
        doc = request_document(request)
        doc.title = f"Request #{request.id} created: {what(request)}"
        doc.lines.insert(0, "Nothing is signalled until an approver approves it.")
        doc.commands_intro = "An approver decides with:"
        doc.commands = [f"approve {request.id}", f"deny {request.id}"]
        return doc
    where = f" in {channel(result.posted_in)}" if result.posted_in else ""
    if result.unrecorded:
        return Document(
            title=f"Request #{request.id} was posted{where}, but the bot could not record that",
            lines=[
                f"{what(request)[0].upper()}{what(request)[1:]}.",
                "An approver can still decide it with the buttons on that message; if nobody does within "
                f"{format_duration(result.withdrawn_after)} it is withdrawn, and you will be "
                "told. Nothing is signalled until then.",
            ],
            tone=Tone.WARNING,
        )
    if request.status != RequestStatus.PENDING:  # decided or withdrawn meanwhile (a slow or lost answer)
        return Document(
            title=f"Request #{request.id} was posted for approval{where}",
            lines=[f"{what(request)[0].upper()}{what(request)[1:]}.", status_line(request)],
        )
    return Document(
        title=f"Request #{request.id} sent for approval{where}",
        lines=[
            f"{what(request)[0].upper()}{what(request)[1:]}.",
            f"Nothing is signalled until an approver approves it; it expires {moment(request.expires_at)}.",
        ],
    )


def decided_document(result: Decided) -> Document:
    request = result.request
    doc = request_document(request)
    if result.effect == "approval_recorded":
        doc.title = (
            f"Your approval of request #{request.id} is recorded: "
            f"{result.approvals_counted if result.approvals_counted is not None else len(request.approvals)} of "
            f"{request.required_approvals}. It runs when the last one approves."
        )
        doc.table = None
        doc.notes = []
    return doc


def pending_requests_document(result: PendingRequests) -> Document:
    if not result.requests:
        return Document(title="No pending requests.")
    lines = []
    for r in result.requests:
        left = format_duration(r.expires_at - r.now)
        lines.append(
            f"#{r.id} · {what(r)} · by {mention(r.requester)} · "
            f"{len(r.approvals)}/{r.required_approvals} approvals · expires in {left}"
        )
    return Document(
        title=plural(len(result.requests), "pending request"),
        lines=lines,
        notes=[
            "Approvers decide with approve <id> or deny <id>."
            if on_console()
            else "Approvers decide with the buttons on each request's message."
        ],
    )


def audit_line(entry: AuditEntry) -> str:
    parts = [moment(entry.at), f"#{entry.request_id}" if entry.request_id else "—", entry.event]
    if entry.action:
        parts.append(entry.action)
    if entry.role_name:
        parts.append(f"role {strip(entry.role_name)}")
    if entry.pids:
        parts.append(f"pids {_pid_list(list(entry.pids))}")
    if entry.target and entry.target != DEFAULT_TARGET:
        parts.append(f"on {entry.target}")
    if entry.event in (AuditEvent.LINKED, AuditEvent.UNLINKED):
        parts.append(f"owner {mention(entry.requester)}")
    elif entry.requester:
        parts.append(f"requested by {mention(entry.requester)}")
    if entry.approvers:
        parts.append("approved by " + ", ".join(mention(a) for a in entry.approvers))
    if entry.actor and entry.actor != entry.requester and entry.actor not in entry.approvers:
        parts.append(f"by {mention(entry.actor)}")
    if entry.note is not None:
        parts.append(strip(audit_note_text(entry.note)))
        if isinstance(entry.note, AlertAcknowledged) and entry.note.previous:
            parts.append(f"taking it over from {mention(entry.note.previous)}")
    elif entry.outcome:  # written before notes existed
        parts.append(strip(entry.outcome))
    if entry.origin:
        parts.append(f"via {strip(entry.origin)}")
    return " · ".join(parts)


def audit_trail_document(result: AuditTrail) -> Document:
    if not result.entries:
        return Document(title="The audit trail is empty.")
    return Document(
        title=f"Last {plural(len(result.entries), 'audit entry', 'audit entries')}, newest first",
        lines=[audit_line(entry) for entry in result.entries],
    )


def audit_note_text(note: AuditNote) -> str:
    """What an audit entry's note says."""
    match note:
        case Reason(text=text):
            return f"reason: {text}"
        case Refusal(problem=NotAllowed(standing=standing)):
            return f"{standing.role.label} may not request this"
        case Refusal(problem=TooManyRequests() as too_many):
            if len(too_many.open_ids) < too_many.limit:
                return f"{plural(too_many.last_minute, 'request')} in the last minute"
            return f"{plural(len(too_many.open_ids), 'request')} already open (at most {too_many.limit})"
        case Refusal(problem=problem):
            return drain_refused_text(problem) if isinstance(problem, DrainRefused) else problem_text(problem)
        case ClickRefusal(approve=approve, issue=DecisionIssue.OWN_REQUEST):
            return f"{'approve' if approve else 'deny'}: own request"
        case ClickRefusal(approve=approve):
            return f"{'approve' if approve else 'deny'}: not an approver"
        case RefusalsSummarised(count=count, first=first, last=last):
            return (
                f"{plural(count, 'more refused attempt')}, "
                f"{first.astimezone(UTC):%H:%M:%S}–{last.astimezone(UTC):%H:%M:%S} UTC"
            )
        case ApprovalCount(counted=counted, required=required):
            return f"{counted} of {required} approvals"
        case PostFailed(channel=where, reason=reason):
            return f"could not be posted for approval in {where}: {reason}"
        case Closed(why=Closure.EXPIRED):
            return "nothing was done"
        case Closed(why=Closure.NEVER_POSTED):
            return "the bot stopped before posting it for approval; nothing was done"
        case Closed():
            return f"the bot stopped while executing; check the sessions with {slash('list')}"
        case Outcomes(outcomes=outcomes, seconds=seconds):
            return outcome_summary(outcomes) + (f" (in {seconds:.1f} s)" if seconds is not None else "")
        case LinkNote(source=LinkSource.LOGIN, session=session):
            return "proved a login as the role" + (f" ({session})" if session else "")
        case LinkNote(source=LinkSource.GRANTED):
            return "linked by an approver"
        case LinkNote():
            return "configured"
        case DrainEnded(database=database, early=True):
            return f"{strip(database)} accepts connections again"
        case DrainEnded(database=database):
            return f"{strip(database)} accepts connections again: its drain time was up"
        case SelfServiceNote():
            return "self-service: the owner's own idle sessions, no approver needed"
        case AlertAcknowledged(alert_id=alert_id, kind=kind):
            return f"alert #{alert_id} ({kind_text(kind)})"  # who had it before: ``audit_line`` names them
        case AlertSnoozed(alert_id=alert_id, kind=kind, until=until):
            return f"alert #{alert_id} ({kind_text(kind)}) until {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        case AlertUnsnoozed(alert_id=alert_id, kind=kind, until=until):
            return f"alert #{alert_id} ({kind_text(kind)}), snoozed until {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        case _:
            assert_never(note)


def outcome_summary(outcomes: Sequence[SignalOutcome]) -> str:
    """``4711 terminated, 4712 failed (…)``: what became of each target."""
    parts = []
    for o in outcomes:
        detail = outcome_detail(o.note, o.error)
        parts.append(
            f"{o.pid} {OUTCOME_LABELS[o.outcome]}"
            + (f" ({detail})" if detail and o.outcome == TargetOutcome.FAILED else "")
        )
    return ", ".join(parts)
