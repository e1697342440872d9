"""What the adapters raise, in the core's own terms (the core never sees psycopg's or Slack's errors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from bot.model.servers import Fill, Fullness

if TYPE_CHECKING:
    from bot.model.requests import Openings


class UnknownTargetError(LookupError):
    """A target name nobody configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known


class TargetUnavailableError(Exception):
    """The bot cannot get in to a target (or it does not answer in time). ``reason``: libpq's,
    passwords removed; ``full``: when it was refused for lack of a slot; ``fill``: how full it was
    when the bot last looked."""

    def __init__(self, name: str, reason: str, *, full: Fullness | None = None, fill: Fill | None = None) -> None:
        super().__init__(f"target {name} is unreachable: {reason}")
        self.name = name
        self.reason = reason
        self.full = full
        self.fill = fill


class TargetBusyError(TargetUnavailableError):
    """The server answers, but every connection of the bot's is in use: slow, not down."""


class StateUnavailableError(Exception):
    """The bot's state database does not answer (or has no free connection in time)."""


class StateSchemaError(Exception):
    """Schema pgconn exists but is not the bot's own: refusing to use it (never retried)."""


class AnnounceError(Exception):
    """Slack (or whatever announces) did not take the message.

    ``retry_after``: it said when to try again. ``permanent``: trying again cannot help —
    "message" (Slack refuses this content) or "channel" (it takes nothing in that channel).
    """

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        permanent: Literal["message", "channel"] | None = None,
        *,
        known: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.permanent = permanent
        self.known = known  # False: an error Slack gave that the bot does not know to be passing


class TooManyOpenRequests(Exception):
    """The requester may not open another request now (see ``Openings``)."""

    def __init__(self, openings: Openings) -> None:
        super().__init__(f"{len(openings.open_ids)} open requests, {openings.last_minute} in the last minute")
        self.openings = openings


# Failures the bot expects to meet (a database or Slack that does not answer, a target that
# refuses it, a timeout): logged without a traceback; anything else is logged with one.
KNOWN_FAILURES: tuple[type[BaseException], ...] = (
    StateUnavailableError,
    UnknownTargetError,
    TargetUnavailableError,
    AnnounceError,
    TimeoutError,
)
