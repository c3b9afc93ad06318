"""RTMH, the Real-Time DevOps Monitoring Hub.

Data flow, one package per stage: ``ingest`` (Kafka -> decode -> one PostgreSQL transaction per
batch) -> ``windows`` (sliding-window partials merged into metrics_agg) -> ``rules`` (evaluation
and the incident state machine, writing the notification outbox) -> ``notify`` (delivery).
``db`` owns PostgreSQL, ``kafka`` wraps confluent-kafka, ``embedded`` starts local servers.
"""

__version__ = "0.1.0"
