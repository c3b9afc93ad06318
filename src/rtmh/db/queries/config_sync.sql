-- `rtmh config apply|export|check` (rtmh.service.config_sync). The writes of a rule or a channel
-- reuse rule_admin.sql and channels.sql (one INSERT per table); here are what only the
-- declarative sync needs: the whole current state, locked, and the managed_by bookkeeping.

-- name: lock_config
-- Two applies at once would each compute a diff against a state the other is changing: the
-- second waits for the first to commit, then diffs against its result.
SELECT pg_advisory_xact_lock(hashtext('rtmh config apply'))

-- name: all_rules
SELECT * FROM alert_rules ORDER BY name FOR UPDATE

-- name: all_channels
SELECT name, type, config, secrets, enabled, managed_by, created_at, updated_at
FROM notification_channels ORDER BY name FOR UPDATE

-- name: named_silences
-- Only declared silences have a name; hand-made ones are never touched by a sync.
SELECT id, name, matchers, starts_at, ends_at, comment, created_by, managed_by
FROM silences WHERE name IS NOT NULL ORDER BY name FOR UPDATE

-- name: set_rule_managed_by
UPDATE alert_rules SET managed_by = %s WHERE id = %s AND managed_by IS DISTINCT FROM %s

-- name: set_channel_managed_by
UPDATE notification_channels SET managed_by = %s WHERE name = %s AND managed_by IS DISTINCT FROM %s

-- name: set_silence_managed_by
UPDATE silences SET managed_by = %s WHERE id = %s AND managed_by IS DISTINCT FROM %s

-- name: insert_named_silence
INSERT INTO silences (name, managed_by, matchers, starts_at, ends_at, comment, created_by)
VALUES (%(name)s, %(managed_by)s, %(matchers)s, %(starts_at)s, %(ends_at)s, %(comment)s,
        %(created_by)s)
RETURNING id

-- name: update_named_silence
UPDATE silences
SET matchers = %(matchers)s, starts_at = %(starts_at)s, ends_at = %(ends_at)s,
    comment = %(comment)s, managed_by = %(managed_by)s
WHERE id = %(id)s

-- name: end_named_silence
-- --prune: the silence ends now (its rows in alert_notifications.suppressed_by keep meaning);
-- one that had not started yet ends before it starts.
UPDATE silences
SET ends_at = now(), starts_at = least(starts_at, now() - interval '1 millisecond')
WHERE id = %s AND ends_at > now()

-- name: live_named_silences
SELECT id, name, matchers, starts_at, ends_at, comment
FROM silences WHERE name IS NOT NULL AND ends_at > now() ORDER BY name

-- name: seen_series
-- `config check` with a database: which (window_key, metric_type) had windows in the last day,
-- to warn about a rule whose pattern or metric type matches nothing.
SELECT DISTINCT window_key, metric_type
FROM metrics_agg WHERE window_start > now() - interval '1 day'
