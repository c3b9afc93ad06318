-- Queries of `rtmh up --demo` (rtmh/up/demo.py): route the story's incidents to the loopback
-- webhook receiver so demo notifications travel the real delivery path.

-- name: upsert_demo_channel
-- The demo channel points at this run's receiver (a new port and secret each start).
INSERT INTO notification_channels (name, type, config, secrets, enabled)
VALUES (%s, 'webhook', %s, %s, true)
ON CONFLICT (name) DO UPDATE
SET type = 'webhook', config = EXCLUDED.config, secrets = EXCLUDED.secrets, enabled = true

-- name: route_story_rules
-- The story's rules, enabled and sent to the demo channel, with quick resolve times and
-- 50-event windows for ratio/quantile verdicts (fewer false alarms on healthy services).
UPDATE alert_rules SET enabled = true, resolve_after_seconds = 15, min_count = 50,
       channels = ARRAY[%s]
WHERE name IN ('high_error_rate', 'high_latency_p95')
