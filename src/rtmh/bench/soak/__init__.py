"""`rtmh bench soak`: an hour of steady traffic with error bursts while a chaos loop kills a
worker (of two), kills the notifier, restarts PostgreSQL and makes the webhook receiver fail;
then every promise checked (issue 16; docs/soak.md).

The modules: ``model`` (parameters, the seeded fault and burst schedules, verdicts),
``traffic`` (numbered good messages, marked malformed ones), ``chaos`` (the hub's processes and
the fault thread), ``memory`` (samples and the PNG), ``run``, ``checks`` (the end), ``render``,
``command``.
"""

from __future__ import annotations

from rtmh.bench.soak.command import register

__all__ = ["register"]
