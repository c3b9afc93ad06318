-- Queries of `rtmh up`'s live view (rtmh/up/view.py), run about once a second on one
-- connection: each reads a few rows, never a scan of raw_events.

-- name: committed_offsets
-- Messages written so far: the sum of the group's next offsets over every partition. The view
-- compares it with the topics' high watermarks to show the lag.
SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = %s

-- name: count_dead_letters
SELECT count(*) FROM dead_letters

-- name: recent_incidents
-- Live incidents first, then those resolved in the last three minutes (so a recovery stays on
-- screen long enough to be seen); the column order is view.IncidentLine's.
SELECT id::text, severity, coalesce(window_key, ''), coalesce(metadata->>'rule_name', title),
       last_value, threshold, coalesce(metadata->>'condition', '>'), first_seen, status, source,
       resolved_at
FROM incidents
WHERE status IN ('open', 'investigating') OR resolved_at > now() - interval '3 minutes'
ORDER BY (status IN ('open', 'investigating')) DESC, first_seen DESC LIMIT 8

-- name: recent_notifications
-- The last six notifications with their incident's title; the column order is
-- view.NotificationLine's.
SELECT n.id, n.updated_at, n.channel, n.event, n.status, n.attempts, coalesce(i.title, ''),
       coalesce(n.last_error, '')
FROM alert_notifications n LEFT JOIN incidents i ON i.id = n.incident_id
ORDER BY n.id DESC LIMIT 6
