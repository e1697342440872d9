"""Monitor history as tables: the sparkline, thinning as rows age, and what a period comes to
(peak, spans at the limit, gaps), with how `history`, `status` and an alert say it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.config import ConfigError, load_settings
from bot.core.commands import ShowHistory
from bot.core.parser import parse_command
from bot.model.alerts import Alert, AlertKind, Severity, Shape, Snapshot
from bot.model.history import (
    DEFAULT_SINCE,
    Line,
    Point,
    RoleCount,
    Sample,
    Span,
    alert_line,
    at_limit,
    bucket_of,
    gaps,
    line,
    line_from_details,
    line_is_fresh,
    merge,
    points_of,
    resolution_for,
    sample_of,
    summarise,
    thinning_plan,
)
from bot.render.alerts import alert_document
from bot.render.document import Surface
from bot.render.history import GAP, history_document, sparkline, status_history_lines
from bot.render.text import render_text

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def sample(at: datetime, backends: int = 10, *, covers: float = 60, roles: dict[str, tuple[int, int]] | None = None,
           target: str = "default", states: dict[str, int] | None = None, samples: int = 1) -> Sample:  # fmt: skip
    return Sample(
        target=target,
        at=at,
        covers=covers,
        client_backends=backends,
        usable_slots=97,
        by_state=states or {"idle": backends},
        roles={role: RoleCount(*pair) for role, pair in (roles or {}).items()},
        samples=samples,
    )


def minutes_ago(n: float) -> datetime:
    return NOW - timedelta(minutes=n)


# --- the sparkline ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "bounds", "expected"),
    [
        ([0, 1, 2, 3, 4, 5, 6, 7], (None, None), "▁▂▃▄▅▆▇█"),  # rising: every level once
        ([7, 6, 5, 4, 3, 2, 1, 0], (None, None), "█▇▆▅▄▃▂▁"),  # falling
        ([3, 3, 3], (None, None), "▄▄▄"),  # flat: in the middle
        ([0, 0], (None, None), "▁▁"),  # flat at nothing: at the bottom
        ([5], (None, None), "▄"),  # one point
        ([1, None, 3], (None, None), f"▁{GAP}█"),  # a gap
        ([None, None], (None, None), GAP * 2),  # nothing recorded at all
        ([], (None, None), ""),
        ([0, 10**15, 2 * 10**15], (None, None), "▁▅█"),  # huge values: no overflow, no wrap
        ([10**18, 10**18 + 7], (None, None), "▁█"),  # huge and close together
        ([10, 0], (0, 5), "█▁"),  # outside the given bounds: clamped
        ([2, 4], (0, 4), "▅█"),  # the given bounds, not the values' own (halfway rounds up)
        ([1.5, 2.5], (None, None), "▁█"),  # not only whole numbers
    ],
)
def test_sparkline(values: list[float | None], bounds: tuple[float | None, float | None], expected: str) -> None:
    assert sparkline(values, *bounds) == expected


# --- thinning as rows age ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "resolution"),
    [
        (timedelta(0), 0),
        (timedelta(hours=23, minutes=59), 0),  # per cycle for a day
        (timedelta(days=1), 300),
        (timedelta(days=6, hours=23), 300),  # per 5 minutes for a week
        (timedelta(days=7), 3600),
        (timedelta(days=400), 3600),  # per hour after
    ],
)
def test_a_row_thins_as_it_ages(age: timedelta, resolution: int) -> None:
    assert resolution_for(age) == resolution


@pytest.mark.parametrize(
    ("at", "resolution", "bucket"),
    [
        (datetime(2026, 11, 21, 12, 4, 59, tzinfo=UTC), 300, datetime(2026, 11, 21, 12, 0, tzinfo=UTC)),
        (datetime(2026, 11, 21, 12, 5, 0, tzinfo=UTC), 300, datetime(2026, 11, 21, 12, 5, tzinfo=UTC)),
        (datetime(2026, 11, 21, 12, 59, 59, tzinfo=UTC), 3600, datetime(2026, 11, 21, 12, 0, tzinfo=UTC)),
        (datetime(2026, 11, 21, 13, 0, 0, tzinfo=UTC), 3600, datetime(2026, 11, 21, 13, 0, tzinfo=UTC)),
    ],
)
def test_buckets_are_aligned_to_the_clock(at: datetime, resolution: int, bucket: datetime) -> None:
    assert bucket_of(at, resolution) == bucket


def test_the_plan_thins_the_coarsest_tier_first_and_merges_whole_buckets() -> None:
    now = datetime(2026, 11, 21, 12, 7, 30, tzinfo=UTC)
    assert thinning_plan(now) == [
        (datetime(2026, 11, 14, 12, 0, tzinfo=UTC), 3600),  # a week ago, on the hour
        (datetime(2026, 11, 20, 12, 5, tzinfo=UTC), 300),  # a day ago, on 5 minutes
    ]


def test_merging_keeps_the_peaks_of_each_bucket_and_counts_the_cycles() -> None:
    start = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    rows = [
        sample(start, 10, roles={"bob": (3, 5)}, states={"idle": 8, "active": 2}),
        sample(start + MINUTE, 14, roles={"bob": (5, 5), "ann": (2, 4)}, states={"idle": 6, "active": 8}),
        sample(start + 2 * MINUTE, 12, roles={"bob": (4, 6)}, states={"idle": 12}),
        sample(start + 5 * MINUTE, 3),  # the next bucket
        sample(start, 50, target="reporting"),  # another server
    ]
    first, other, second = merge(rows, 300)
    assert (first.target, first.at, first.covers, first.samples) == ("default", start, 300, 3)
    assert first.client_backends == 14
    assert dict(first.by_state) == {"idle": 12, "active": 8}
    assert dict(first.roles) == {"bob": RoleCount(5, 6), "ann": RoleCount(2, 4)}  # the peak, the latest limit
    assert (other.target, other.client_backends) == ("reporting", 50)
    assert (second.at, second.client_backends, second.samples) == (start + 5 * MINUTE, 3, 1)


def test_merging_again_into_a_coarser_bucket_adds_up() -> None:
    start = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
    five = [sample(start + k * 5 * MINUTE, 10 + k, covers=300, samples=5) for k in range(12)]
    (hour,) = merge(five, 3600)
    assert (hour.at, hour.covers, hour.samples, hour.client_backends) == (start, 3600, 60, 21)


def test_what_a_cycle_keeps_of_a_snapshot() -> None:
    snapshot = Snapshot(
        target="default",
        server_version="16",
        max_connections=100,
        superuser_reserved=3,
        reserved=0,
        observed_at=NOW,
        client_backends=40,
        full_roles=[],
        idle_in_transaction=[],
        long_queries=[],
        by_state={"idle": 30, "active": 10},
        role_use={"bob": (5, 5), "ops": (0, -1)},
    )
    kept = sample_of(snapshot, 0)  # a monitor driven by hand: a minute
    assert (kept.at, kept.covers, kept.client_backends, kept.usable_slots) == (NOW, 60, 40, 97)
    assert dict(kept.roles) == {"bob": RoleCount(5, 5), "ops": RoleCount(0, -1)}


# --- a period ----------------------------------------------------------------------------------------


def test_a_role_missing_from_a_sample_was_under_half_its_limit() -> None:
    rows = [sample(minutes_ago(2), roles={"bob": (5, 5)}), sample(minutes_ago(1))]
    assert points_of(rows, "bob") == [
        Point(minutes_ago(2), 60, 5, 5),
        Point(minutes_ago(1), 60, 0, None, recorded=False),
    ]
    assert [p.value for p in points_of(rows, None)] == [10, 10]


def points(*pairs: tuple[float, int], limit: int | None = 5, covers: float = 60) -> list[Point]:
    """(minutes ago, value) each."""
    return [Point(minutes_ago(ago), covers, value, limit) for ago, value in pairs]


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([(3, 1), (2, 1), (1, 1)], []),  # every minute: no gap
        ([(4, 1), (2, 1), (1, 1)], []),  # one cycle missed: no gap
        ([(10, 1), (5, 1), (1, 1)], [(9, 5), (4, 1)]),  # five minutes without a sample, twice
        ([(20, 1), (19, 1)], [(18, 0)]),  # not recording now
        ([], []),
    ],
)
def test_gaps(pairs: list[tuple[float, int]], expected: list[tuple[float, float]]) -> None:
    assert gaps(points(*pairs), NOW) == [Span(minutes_ago(a), minutes_ago(b)) for a, b in expected]


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([(4, 3), (3, 4), (2, 4), (1, 4)], []),  # below the limit throughout
        ([(4, 3), (3, 5), (2, 6), (1, 4)], [(3, 1)]),  # at, then over, then below
        ([(3, 5), (2, 5), (1, 5)], [(3, 0)]),  # still at it: up to now
        ([(5, 5), (4, 2), (2, 5)], [(5, 4), (2, 1)]),  # twice
        ([(30, 5), (2, 5)], [(30, 29), (2, 1)]),  # a gap ends a span
    ],
)
def test_spans_at_the_limit(pairs: list[tuple[float, int]], expected: list[tuple[float, float]]) -> None:
    assert at_limit(points(*pairs), NOW) == [Span(minutes_ago(a), minutes_ago(b)) for a, b in expected]


def test_nothing_is_at_a_limit_that_is_not_there() -> None:
    assert at_limit(points((2, 50), (1, 50), limit=None), NOW) == []


@pytest.mark.parametrize(
    ("pairs", "width", "values"),
    [
        ([(3, 1), (2, 2), (1, 3)], 48, (1, 2, 3)),  # never finer than the samples
        ([(4, 1), (2, 3)], 48, (1, 1, 3, 3)),  # a missed cycle shows the sample before it
        ([(8, 1), (1, 3)], 48, (1, 1, 1, None, None, None, None, 3)),  # a gap (after what the sample stands for)
        ([(60, 1), (55, 9), (45, 2), (30, 4), (20, 3), (5, 1)], 4, (9, 2, 4, 1)),  # each mark the peak in it
        ([(1, 7)], 48, (7,)),  # one point
    ],
)
def test_a_line_of_marks(pairs: list[tuple[float, int]], width: int, values: tuple[int | None, ...]) -> None:
    drawn = points(*pairs)
    assert line(drawn, drawn[0].at, NOW, width).values == values


def test_a_line_of_nothing() -> None:
    assert line([], NOW, NOW, 48) == Line(NOW, 0.0, ())


def test_a_period_with_no_history() -> None:
    report = summarise([], target="default", role=None, since=DEFAULT_SINCE, now=NOW)
    assert (report.samples, report.recorded, report.line.values) == (0, False, ())
    text = render_text(report, Surface.CONSOLE)
    assert "No history yet for the server in the last 24h" in text


def test_a_role_never_at_half_its_limit_has_no_history() -> None:
    rows = [sample(minutes_ago(2)), sample(minutes_ago(1))]
    report = summarise(rows, target="default", role="bob", since=DEFAULT_SINCE, now=NOW)
    assert (report.samples, report.recorded) == (2, False)
    assert "it never used half of its CONNECTION LIMIT" in render_text(report, Surface.CONSOLE)


def test_a_role_at_its_limit_with_a_gap() -> None:
    rows = [
        sample(minutes_ago(120), roles={"bob": (2, 5)}),
        sample(minutes_ago(119), roles={"bob": (5, 5)}),
        sample(minutes_ago(118), roles={"bob": (5, 5)}),
        sample(minutes_ago(117)),  # under half: not kept
        # the monitor off for 100 minutes
        sample(minutes_ago(16), roles={"bob": (4, 5)}),
        sample(minutes_ago(15), roles={"bob": (5, 5)}),
        *[sample(minutes_ago(m), roles={"bob": (3, 5)}) for m in range(14, 0, -1)],
    ]
    report = summarise(rows, target="reporting", role="bob", since=timedelta(hours=3), now=NOW)
    assert (report.peak, report.peak_at, report.limit) == (5, minutes_ago(15), 5)  # the latest time at the peak
    assert report.at_limit == (Span(minutes_ago(119), minutes_ago(117)), Span(minutes_ago(15), minutes_ago(14)))
    assert report.gaps == (Span(minutes_ago(116), minutes_ago(16)),)
    assert report.unrecorded == 1 and report.first_at == minutes_ago(120)
    assert report.line.start == minutes_ago(120) and GAP not in report.line.values  # None, drawn as GAP
    assert None in report.line.values
    text = render_text(report, Surface.CONSOLE)
    assert "bob on reporting, last 3h: peak 5/5 connections" in text
    assert sparkline(report.line.values, report.line.low, report.line.high) in text
    assert GAP in text and "1 gap" in text and "the monitor was off" in text
    assert "at or over its limit: 2 times, 3m 00s in all" in text
    assert "less than half" in text  # the unrecorded sample, drawn as 0
    assert "limit bob --db reporting" in text


def test_status_shows_the_servers_last_day_in_one_line() -> None:
    rows = [sample(minutes_ago(m), 10 + m % 5) for m in range(60, 0, -1)]
    report = summarise(rows, target="default", role=None, since=DEFAULT_SINCE, now=NOW)
    (shown,) = status_history_lines(report)
    drawn = report.line
    assert shown.startswith(f"last 24h: {sparkline(drawn.values, drawn.low, drawn.high)}  (")
    assert f"{drawn.low}–{drawn.high} client backends, peak 14 at" in shown
    assert status_history_lines(None) == [] and status_history_lines(summarise([], target="d", role=None,
           since=DEFAULT_SINCE, now=NOW)) == []  # fmt: skip


def test_history_off_says_so() -> None:
    report = summarise([], target="default", role=None, since=DEFAULT_SINCE, now=NOW, retention=timedelta(0))
    assert "PGCONN_HISTORY_RETENTION=0 keeps none" in history_document(report).title


# --- an alert's last 24 hours --------------------------------------------------------------------------


def test_an_alert_keeps_a_small_line_and_shows_it() -> None:
    rows = [sample(NOW - timedelta(hours=h), roles={"bob": (min(5, 6 - h // 4), 5)}) for h in range(23, -1, -1)]
    kept = alert_line(rows, "bob", NOW)
    assert len(kept["values"]) <= 24 and kept["at"] == NOW.isoformat()
    parsed = line_from_details(kept)
    assert parsed is not None and parsed.high == 5
    assert line_is_fresh(kept, NOW + timedelta(minutes=4)) and not line_is_fresh(kept, NOW + timedelta(minutes=6))
    assert not line_is_fresh({"values": "nonsense"}, NOW) and line_from_details({"values": [1, "x"]}) is None
    alert = Alert(
        id=3,
        target="default",
        kind=AlertKind.ROLE_LIMIT,
        subject="bob",
        severity=Severity.WARNING,
        shape=Shape.AT_LIMIT,
        details={"used": 5, "limit": 5, "observed_at": NOW.isoformat(), "history": kept},
        opened_at=NOW,
        last_seen_at=NOW,
    )
    lines = alert_document(alert).lines
    shown = sparkline(parsed.values, parsed.low, parsed.high)
    assert any(text.startswith(f"last 24h: {shown}") and "a mark is 1h" in text for text in lines), lines


def test_an_alert_without_a_line_shows_none() -> None:
    alert = Alert(
        id=3,
        target="default",
        kind=AlertKind.ROLE_LIMIT,
        subject="bob",
        severity=Severity.WARNING,
        shape=Shape.AT_LIMIT,
        details={"used": 5, "limit": 5, "history": {"start": "garbage"}},
        opened_at=NOW,
        last_seen_at=NOW,
    )
    assert not any(text.startswith("last 24h") for text in alert_document(alert).lines)


# --- the grammar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("history", ShowHistory()),
        ("history bob", ShowHistory(role="bob")),
        ("history bob --since 7d --db reporting", ShowHistory(role="bob", since=timedelta(days=7), target="reporting")),
        ("history --since 90m", ShowHistory(since=timedelta(minutes=90))),
    ],
)
def test_history_commands(text: str, expected: ShowHistory) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("history --since 0s", "--since is at least 1m"),
        ("history --since 10", "needs a unit"),
        ("history bob ann", "unexpected extra words"),
        ("history --since", "--since needs a value"),
    ],
)
def test_history_mistakes(text: str, message: str) -> None:
    parsed = parse_command(text)
    assert message in getattr(parsed, "message", ""), parsed


# --- the setting ---------------------------------------------------------------------------------------


def test_history_retention_takes_durations_and_0(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))  # no stray .env
    monkeypatch.delenv("PGCONN_HISTORY_RETENTION", raising=False)
    assert load_settings().history_retention == timedelta(days=14)
    for value, expected in (("36h", timedelta(hours=36)), ("90d", timedelta(days=90)), ("0", timedelta(0))):
        monkeypatch.setenv("PGCONN_HISTORY_RETENTION", value)
        assert load_settings().history_retention == expected
    monkeypatch.setenv("PGCONN_HISTORY_RETENTION", "soon")
    with pytest.raises(ConfigError, match=r"PGCONN_HISTORY_RETENTION: 'soon' is not a duration.*or 0 to keep none"):
        load_settings()
