-- Rules as people write them (rtmh.service.rules). Every write fires the alert_rules trigger
-- that NOTIFYs rtmh_rules_changed, so the workers reload at once.

-- name: list_rules
SELECT * FROM alert_rules ORDER BY name

-- name: get_rule_by_id
SELECT * FROM alert_rules WHERE id = %s

-- name: get_rule_by_name
SELECT * FROM alert_rules WHERE name = %s

-- name: insert_rule
INSERT INTO alert_rules (name, description, source, metric_type, aggregation, condition,
                         threshold, recovery_threshold, for_seconds, window_key_pattern,
                         min_count, no_data_seconds, resolve_after_seconds, severity, channels,
                         enabled, repeat_interval_seconds, runbook_url)
VALUES (%(name)s, %(description)s, %(source)s, %(metric_type)s, %(aggregation)s, %(condition)s,
        %(threshold)s, %(recovery_threshold)s, %(for_seconds)s, %(window_key_pattern)s,
        %(min_count)s, %(no_data_seconds)s, %(resolve_after_seconds)s, %(severity)s,
        %(channels)s, %(enabled)s, %(repeat_interval_seconds)s, %(runbook_url)s)
RETURNING *

-- name: update_rule
UPDATE alert_rules
SET name = %(name)s, description = %(description)s, source = %(source)s,
    metric_type = %(metric_type)s, aggregation = %(aggregation)s, condition = %(condition)s,
    threshold = %(threshold)s, recovery_threshold = %(recovery_threshold)s,
    for_seconds = %(for_seconds)s, window_key_pattern = %(window_key_pattern)s,
    min_count = %(min_count)s, no_data_seconds = %(no_data_seconds)s,
    resolve_after_seconds = %(resolve_after_seconds)s, severity = %(severity)s,
    channels = %(channels)s, enabled = %(enabled)s,
    repeat_interval_seconds = %(repeat_interval_seconds)s, runbook_url = %(runbook_url)s
WHERE id = %(id)s
RETURNING *

-- name: set_rule_enabled
UPDATE alert_rules SET enabled = %s WHERE id = %s RETURNING *

-- name: delete_rule
-- incidents keep their history: their rule_id becomes NULL (ON DELETE SET NULL), and their
-- metadata still names the rule
DELETE FROM alert_rules WHERE id = %s RETURNING id

-- name: existing_channels
SELECT name FROM notification_channels WHERE name = ANY(%s)
