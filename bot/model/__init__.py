"""The shared vocabulary: what core, db and render all speak.

Data types (sessions, requests, alerts, results), closed vocabularies (``StrEnum``s), the errors
the database adapters raise, and pure helpers on them. Nothing here does I/O, and nothing here
imports from the rest of the bot: every layer may import the model, the model imports none.
"""
