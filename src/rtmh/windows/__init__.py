"""Stage 2: event-time sliding windows. Pure window math and mergeable partials (counts, sums,
min/max and a DDSketch) that the ingest batch merges additively into metrics_agg."""
