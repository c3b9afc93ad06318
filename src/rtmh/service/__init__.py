"""What people do to the hub: incidents, rules, channels, silences, tokens, backtests.

Role in the flow: the one place for validation and for the SQL of human actions. The REST API
(:mod:`rtmh.api`) and the on-call commands call these functions; neither talks to the tables
itself. Functions take an open ``psycopg.AsyncConnection`` and raise :mod:`rtmh.service.errors`,
which the API turns into problem responses and the CLI into one-line messages.
"""
