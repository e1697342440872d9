"""What approval requests, decisions and audit entries say (both adapters lay these out)."""

from __future__ import annotations

from datetime import timedelta

from bot.config import DEFAULT_TARGET
from bot.core.durations import format_duration
from bot.core.housekeeping import UNPOSTED_AFTER_SECONDS
from bot.core.markup import channel, mention, moment, strip
from bot.core.results import (
    OUTCOME_LABELS,
    AuditEntry,
    AuditTrail,
    Decided,
    PendingRequests,
    RequestOpened,
    RequestStatus,
    RequestTarget,
    RoleFill,
    SignalRequest,
)
from bot.render.document import Document, Table, Tone, one_line, to_document

MAX_PIDS_IN_LINE = 12


def _pid_list(pids: list[int]) -> str:
    shown = ", ".join(str(p) for p in pids[:MAX_PIDS_IN_LINE])
    return shown + (f" and {len(pids) - MAX_PIDS_IN_LINE} more" if len(pids) > MAX_PIDS_IN_LINE else "")


def what(request: SignalRequest) -> str:
    """``terminate 3 sessions of bob (pids 1, 2, 3)``: the sentence the approver agrees to."""
    roles = ", ".join(strip(r) for r in request.roles) or strip(request.role_name or "?")
    n = len(request.targets)
    where = "" if request.target == DEFAULT_TARGET else f" on {request.target}"
    if request.action == "cancel":
        noun = "the running query of " + ("pid" if n == 1 else f"{n} sessions: pids")
        return f"cancel {noun} {_pid_list(request.pids)} ({roles}){where}"
    if request.scope == "user":
        return f"terminate all {n} session{'s' if n != 1 else ''} of {roles}{where} (pids {_pid_list(request.pids)})"
    if request.scope == "idle" and request.role_name is None:  # chosen by pid, from an alert
        if n == 1:
            return f"terminate pid {request.pids[0]} ({roles}){where} while it is still idle in its transaction"
        return f"terminate {n} idle sessions: pids {_pid_list(request.pids)} ({roles}){where}"
    if request.scope == "idle":
        idle = f" idle ≥ {format_duration(request.older_than)}" if request.older_than else " idle"
        return f"terminate {n}{idle} session{'s' if n != 1 else ''} of {roles}{where} (pids {_pid_list(request.pids)})"
    if n == 1:
        return f"terminate pid {request.pids[0]} ({roles}){where}"
    return f"terminate {n} sessions: pids {_pid_list(request.pids)} ({roles}){where}"


def _fill(fill: RoleFill) -> str:
    role = strip(fill.role)
    if fill.limit < 0:
        return f"{role}: {fill.used} connections, no limit"
    state = "at the limit" if fill.used >= fill.limit else f"{fill.limit - fill.used} left"
    return f"{role}: {fill.used}/{fill.limit} — {state}"


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
                else f"Waiting for {request.required_approvals} approval"
                f"{'s' if request.required_approvals > 1 else ''} · expires {moment(request.expires_at)}"
            )
        case RequestStatus.PENDING | RequestStatus.EXPIRED:
            return f"Expired {moment(request.expires_at)} without approval — nothing was signalled."
        case RequestStatus.POSTING:
            return "Being posted for approval — nothing can be approved or signalled yet."
        case RequestStatus.EXECUTING:
            return f"Approved by {_approvers(request)} {_at(request)} — executing…"
        case RequestStatus.EXECUTED:
            return f"Approved by {_approvers(request)} {_at(request)} — done: {done}."
        case RequestStatus.DENIED:
            return f"Denied by {mention(request.decided_by)} {_at(request)} — nothing was signalled."
        case RequestStatus.INTERRUPTED:
            return (
                f"Approved by {_approvers(request)} {_at(request)}, but the bot stopped while executing; "
                "check the sessions with /pgconn list."
            )
        case _:
            return "Withdrawn: it could not be posted for approval — nothing was signalled."


def _at(request: SignalRequest) -> str:
    return f"at {moment(request.decided_at)}" if request.decided_at else ""


def _outcome_counts(request: SignalRequest) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in request.targets:
        label = OUTCOME_LABELS.get(t.outcome or "", "not run")
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
            label = OUTCOME_LABELS.get(t.outcome or "", "—")
            row.append(label + (f": {one_line(t.detail, 60)}" if t.detail else ""))
        rows.append(row)
    return Table(headers, rows)


def request_document(request: SignalRequest) -> Document:
    """The approval message: what, who, why, how full, the targets, and where it stands."""
    reason = f"“{request.reason}”" if request.reason else "no reason given"
    doc = Document(
        title=f"Request #{request.id}: {what(request)}",
        lines=[
            # Where it stands comes first: it is what every reader needs, and a long reason below
            # can then never push it out of the message.
            status_line(request),
            f"Requested by {mention(request.requester)} {f'at {moment(request.created_at)}'} · reason: {reason}",
            *(_fill(f) for f in request.fills),
        ],
        table=_target_table(request.targets),
        notes=[
            f"Request #{request.id}. Before signalling, each pid is checked again: same session (backend_start) "
            "and same role, or it is left alone."
        ],
        tone=Tone.WARNING if request.status in (RequestStatus.PENDING, RequestStatus.EXECUTING) else Tone.INFO,
    )
    failed = [t for t in request.targets if t.outcome == "failed" and t.detail]
    if failed:
        doc.notes.append(f"pid {failed[0].pid} failed: {failed[0].detail}")
    return doc


def confirm_text(request: SignalRequest) -> str:
    return f"pgconn-bot will {what(request)}, after checking each is still the same session."


@to_document.register
def _(result: RequestOpened) -> Document:
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
                f"{format_duration(timedelta(seconds=UNPOSTED_AFTER_SECONDS))} it is withdrawn, and you will be "
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


@to_document.register
def _(result: Decided) -> Document:
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


@to_document.register
def _(result: PendingRequests) -> Document:
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
        title=f"{len(result.requests)} pending request{'s' if len(result.requests) != 1 else ''}",
        lines=lines,
        notes=["Approvers decide with the buttons on each request's message."],
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
    if entry.requester:
        parts.append(f"requested by {mention(entry.requester)}")
    if entry.approvers:
        parts.append("approved by " + ", ".join(mention(a) for a in entry.approvers))
    if entry.actor and entry.actor != entry.requester and entry.actor not in entry.approvers:
        parts.append(f"by {mention(entry.actor)}")
    if entry.outcome:
        parts.append(strip(entry.outcome))
    if entry.origin:
        parts.append(f"via {strip(entry.origin)}")
    return " · ".join(parts)


@to_document.register
def _(result: AuditTrail) -> Document:
    if not result.entries:
        return Document(title="The audit trail is empty.")
    return Document(
        title=f"Last {len(result.entries)} audit entr{'ies' if len(result.entries) != 1 else 'y'}, newest first",
        lines=[audit_line(entry) for entry in result.entries],
    )
