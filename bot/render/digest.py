"""The daily digest's words."""

from __future__ import annotations

from bot.model.digest import Digest
from bot.model.durations import format_duration
from bot.render.document import Document, on, plural
from bot.render.markup import moment, strip

_KINDS = {
    "role_limit": ("role at its limit", "roles at their limit"),
    "server_fill": ("server filling up", "server filling up"),
    "idle_in_transaction": ("session idle in transaction", "sessions idle in transaction"),
    "long_query": ("long query", "long queries"),
    "target_down": ("target not answering", "targets not answering"),
}


def digest_document(digest: Digest) -> Document:
    lines: list[str] = []
    if digest.roles_at_limit:
        lines.append(f"Roles that hit their connection limit: {len(digest.roles_at_limit)}")
        for role in digest.roles_at_limit:
            apps = ", ".join(f"{strip(app)} {n}" for app, n in role.applications)
            lines.append(
                f"{strip(role.role)}{on(role.target)}: {plural(role.times, 'time')}, "
                f"{format_duration(role.duration)} in all" + (f" — from {apps}" if apps else "")
            )
    else:
        lines.append("No role hit its connection limit.")
    made = sum(digest.requests.values())
    if made:
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(digest.requests.items()))
        lines.append(f"Requests: {made} made ({by_status}); {plural(digest.sessions_ended, 'session')} ended.")
    else:
        lines.append(f"No kill or cancel requests; {plural(digest.sessions_ended, 'session')} ended.")
    if digest.alerts:
        spans = "; ".join(
            f"{plural(a.count, *_KINDS.get(a.kind, (a.kind, a.kind)))} (longest {format_duration(a.longest)})"
            for a in digest.alerts
        )
        lines.append(f"Alerts raised: {spans}.")
    else:
        lines.append("No alerts raised.")
    if digest.peak_fill is not None:
        when = f" at {moment(digest.peak_at)}" if digest.peak_at else ""
        lines.append(f"Peak server fill: {round(digest.peak_fill * 100)}%{when}.")
    return Document(
        title=f"pgconn-bot daily digest — the 24 hours up to {moment(digest.until)}",
        lines=lines,
    )
