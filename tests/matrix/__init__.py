"""Run the test suite against every supported PostgreSQL major version (``python -m tests.matrix``)."""
