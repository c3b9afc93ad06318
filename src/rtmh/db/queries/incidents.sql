-- People's view of incidents (rtmh.service.incidents): the list, one incident with its timeline
-- and notifications, and the rows a person's action locks. The rules stage's own writes
-- (update_incident, insert_timeline, insert_notification) are reused from rules.sql.

-- name: list_incidents
-- Newest first, keyset-paginated on (created_at, id): idx_incidents_created, or
-- idx_incidents_window_key_created / idx_incidents_rule_created when a service or rule is given
-- (status uses idx_incidents_status, source idx_incidents_source_created). A filter left NULL
-- is folded away when the statement is planned with its parameters (the API's connections
-- never prepare statements, so every plan sees the actual values).
SELECT i.id::text AS id, i.title, i.description, i.severity, i.status, i.source, i.rule_id,
       coalesce(r.name, i.metadata->>'rule_name') AS rule_name, i.window_key, i.last_value,
       i.peak_value, i.threshold, i.trigger_count, i.first_seen, i.last_seen, i.resolved_at,
       i.closed_at, i.assignee, i.created_at, i.updated_at
FROM incidents i
LEFT JOIN alert_rules r ON r.id = i.rule_id
WHERE (%(status)s::text[] IS NULL OR i.status = ANY(%(status)s::text[]))
  AND (%(severity)s::text[] IS NULL OR i.severity = ANY(%(severity)s::text[]))
  AND (%(service)s::text IS NULL OR i.window_key = %(service)s::text)
  AND (%(rule)s::text IS NULL
       OR i.rule_id = (SELECT id FROM alert_rules WHERE name = %(rule)s::text))
  AND (%(source)s::text IS NULL OR i.source = %(source)s::text)
  AND (%(since)s::timestamptz IS NULL OR i.created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR i.created_at < %(until)s::timestamptz)
  AND (%(after_created)s::timestamptz IS NULL
       OR (i.created_at, i.id) < (%(after_created)s::timestamptz, %(after_id)s::uuid))
ORDER BY i.created_at DESC, i.id DESC
LIMIT %(limit)s

-- name: get_incident
SELECT i.id::text AS id, i.title, i.description, i.severity, i.status, i.source, i.rule_id,
       coalesce(r.name, i.metadata->>'rule_name') AS rule_name, i.window_key, i.last_value,
       i.peak_value, i.threshold, i.trigger_count, i.first_seen, i.last_seen, i.resolved_at,
       i.closed_at, i.assignee, i.created_at, i.updated_at, i.metadata
FROM incidents i
LEFT JOIN alert_rules r ON r.id = i.rule_id
WHERE i.id = %s

-- name: lock_incident
-- The row a person's action changes, locked like the rules stage locks it
-- (latest_incident_for_update), so an action and an evaluation of the same incident serialise.
SELECT id::text AS id, title, severity, status, source, rule_id, window_key, fingerprint,
       last_value, peak_value, threshold, trigger_count, first_seen, last_seen, resolved_at,
       closed_at, metadata, description, assignee
FROM incidents
WHERE id = %s
FOR UPDATE

-- name: set_assignee
UPDATE incidents SET assignee = %s WHERE id = %s

-- name: timeline
-- idx_incident_events_incident
SELECT id, event_type, from_status, to_status, value, details, actor, created_at
FROM incident_events
WHERE incident_id = %s
ORDER BY created_at, id

-- name: notifications
-- idx_alert_notifications_incident. response_body is left out: it is the receiver's text.
SELECT id, channel, event, status, attempts, max_attempts, next_attempt_at, last_error,
       http_status, suppressed_by, sent_at, created_at, updated_at
FROM alert_notifications
WHERE incident_id = %s
ORDER BY id

-- name: attempts
-- idx_notification_attempts_notification
SELECT notification_id, attempt, outcome, http_status, error, at
FROM notification_attempts
WHERE notification_id = ANY(%s)
ORDER BY notification_id, attempt, id

-- name: incident_ids_by_prefix
-- The incidents whose id starts with a prefix (the CLI's short ids): the prefix padded with 0s
-- and with fs bounds a range of the primary key's index. Six at most: five to show, one to
-- know there are more.
SELECT id::text FROM incidents WHERE id BETWEEN %s::uuid AND %s::uuid
ORDER BY created_at DESC LIMIT 6
