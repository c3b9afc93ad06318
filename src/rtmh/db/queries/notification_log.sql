-- The notifications log for people (rtmh.service.notification_log): every notification the
-- rules stage and the on-call actions queued, newest first, whatever became of it. The
-- notifier writes these rows (notify.sql); nothing here changes them.

-- name: list_notifications
-- Newest first by id (ids are handed out in creation order), keyset-paginated: a backward scan
-- of the primary key, or of idx_alert_notifications_channel (channel, id) for one channel, that
-- stops after %(limit)s rows. A filter left NULL folds away when the statement is planned with
-- its parameters. The incident's title, service and rule come along for the table.
SELECT n.id, n.incident_id::text AS incident_id, i.title AS incident_title, i.window_key,
       coalesce(r.name, i.metadata->>'rule_name') AS rule_name, n.channel, n.event, n.status,
       n.attempts, n.max_attempts, n.http_status, n.last_error, n.sent_at, n.created_at,
       n.updated_at
FROM alert_notifications n
LEFT JOIN incidents i ON i.id = n.incident_id
LEFT JOIN alert_rules r ON r.id = i.rule_id
WHERE (%(channel)s::text IS NULL OR n.channel = %(channel)s::text)
  AND (%(statuses)s::text[] IS NULL OR n.status = ANY (%(statuses)s::text[]))
  AND (%(incident_id)s::uuid IS NULL OR n.incident_id = %(incident_id)s::uuid)
  AND (%(after_id)s::bigint IS NULL OR n.id < %(after_id)s::bigint)
ORDER BY n.id DESC
LIMIT %(limit)s
