"""Thin wrappers over confluent-kafka: the only place that knows librdkafka's config keys."""
