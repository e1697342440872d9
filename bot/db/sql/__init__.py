"""Every SQL statement the bot runs, by database: ``targets`` (the monitored servers),
``state`` (its own state database; the schema is ``bot/db/migrations``), ``session`` (any
connection). Only ``bot.db`` imports these."""
