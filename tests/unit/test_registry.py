"""One spec per subcommand drives the parser, help, the policy and the service; the state schema
is numbered migration files; typed audit notes survive the database and read back as words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.core.commands import BY_WORD, SPECS, help_for, spec_of
from bot.core.parser import parse_command
from bot.core.policy import NoGroupDirectory, Policy
from bot.core.service import CommandService, Thresholds
from bot.db.sql.state import STATE_MIGRATIONS
from bot.model import codec
from bot.model.access import AccessRole, Standing
from bot.model.audit import (
    ApprovalCount,
    AuditNote,
    ClickRefusal,
    Closed,
    Closure,
    Outcomes,
    PostFailed,
    Reason,
    Refusal,
    RefusalsSummarised,
    note_from_json,
    note_to_json,
)
from bot.model.problems import (
    DecisionIssue,
    NotAllowed,
    PidRefusal,
    PidsRefused,
    TooManyRequests,
    Unsignallable,
)
from bot.model.requests import OutcomeNote, SignalOutcome, TargetOutcome
from bot.render.requests import audit_note_text

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def test_every_word_names_one_subcommand_and_every_spec_parses_its_example() -> None:
    words = [word for spec in SPECS for word in (spec.name, *spec.aliases)]
    assert len(words) == len(set(words)) == len(BY_WORD)
    for spec in SPECS:
        if spec.example:
            command = parse_command(spec.example.replace("<subcommand>", "list"))
            assert not hasattr(command, "message"), (spec.name, command)
            assert spec_of(command) is spec  # type: ignore[arg-type]


def test_every_subcommand_has_a_handler() -> None:
    policy = Policy(viewers=(), requesters=(), approvers=(), default_role=AccessRole.NONE, groups=NoGroupDirectory())
    service = CommandService(catalog=None, policy=policy, thresholds=Thresholds())  # type: ignore[arg-type]
    assert {spec.command for spec in SPECS} == set(service._handlers)


def test_help_lists_every_subcommand_and_each_topic() -> None:
    assert [entry.name for entry in help_for().entries] == [spec.name for spec in SPECS]
    for spec in SPECS:
        topic = help_for(spec.name).topic
        assert topic is not None and topic.usage == spec.usage


def test_the_state_schema_is_numbered_files_shipped_with_the_package() -> None:
    versions = [version for version, _ in STATE_MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 3
    assert all(text.strip() for _, text in STATE_MIGRATIONS)


VIEWER = Standing(AccessRole.VIEWER, ("S0DBAS",))
NOTES: list[tuple[AuditNote, str]] = [
    (Reason("locked out before the exam"), "reason: locked out before the exam"),
    (Refusal(NotAllowed("kill", AccessRole.REQUESTER, VIEWER)), "viewer may not request this"),
    (Refusal(PidsRefused((PidRefusal(4711, Unsignallable.SUPERUSER, "postgres"),), "default")),
     "Nothing was requested: pid 4711 belongs to superuser postgres; superusers' sessions are protected."),
    (Refusal(TooManyRequests((1, 2, 3, 4, 5), 5, 5, 10)), "5 requests already open (at most 5)"),
    (Refusal(TooManyRequests((1,), 5, 10, 10)), "10 requests in the last minute"),
    (ClickRefusal(False, DecisionIssue.NOT_APPROVER), "deny: not an approver"),
    (ClickRefusal(True, DecisionIssue.OWN_REQUEST), "approve: own request"),
    (RefusalsSummarised(2, NOW, NOW + timedelta(seconds=30)), "2 more refused attempts, 10:00:00–10:00:30 UTC"),
    (ApprovalCount(1, 2), "1 of 2 approvals"),
    (PostFailed("C0APPROVE", "not_in_channel"), "could not be posted for approval in C0APPROVE: not_in_channel"),
    (Closed(Closure.EXPIRED), "nothing was done"),
    (Closed(Closure.NEVER_POSTED), "the bot stopped before posting it for approval; nothing was done"),
    (Closed(Closure.STOPPED_EXECUTING), "the bot stopped while executing; check the sessions with /pgconn list"),
    (
        Outcomes(
            (
                SignalOutcome(4711, TargetOutcome.TERMINATED),
                SignalOutcome(4712, TargetOutcome.REPLACED, OutcomeNote.NEW_SESSION),
                SignalOutcome(4713, TargetOutcome.FAILED, error="permission denied to terminate process"),
            )
        ),
        "4711 terminated, 4712 replaced by another session, not signalled, "
        "4713 failed (permission denied to terminate process)",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("note", "words"), NOTES)
def test_audit_notes_survive_the_database_and_read_as_words(note: AuditNote, words: str) -> None:
    stored = note_to_json(note)
    assert note_from_json(stored) == note
    assert audit_note_text(note) == words


def test_a_stored_note_cannot_make_the_bot_build_anything_else() -> None:
    forged = {"$type": "Popen", "args": ["rm", "-rf", "/"]}
    assert note_from_json(forged) is None
    assert note_from_json({"$type": "Reason"}) is None  # not well formed: no text
    assert note_from_json(None) is None
    bad_time = {"$type": "RefusalsSummarised", "count": 2, "first": {"$type": "datetime", "value": "soon"}}
    assert note_from_json(bad_time) is None  # never an exception that would stop the audit readers
    with pytest.raises(codec.CodecError):
        codec.decode({"$type": "Popen"}, [Reason])
