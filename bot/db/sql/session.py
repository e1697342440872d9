"""SQL every connection of the bot's may run, whichever database it is on."""

from __future__ import annotations

# The login role of a connection: the bot's logins are never signalled (see signals.Protection).
LOGIN = "SELECT session_user::text AS login"


PING = "SELECT 1"
