"""pgconn-bot: PostgreSQL connection management from Slack and a terminal."""

__version__ = "0.1.0"
