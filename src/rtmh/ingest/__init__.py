"""Stage 1: consume Kafka, decode, and write each batch (raw rows, window partials, offsets) in one
PostgreSQL transaction. Bad messages go to dead_letters with their bytes and a reason."""
