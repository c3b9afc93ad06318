-- Notification channels for people (rtmh.service.channels). Secrets are written here and read
-- back only to be merged on update or used for a test send: never returned by the API.

-- name: list_channels
SELECT name, type, config, secrets, enabled, created_at, updated_at
FROM notification_channels ORDER BY name

-- name: get_channel
SELECT name, type, config, secrets, enabled, created_at, updated_at
FROM notification_channels WHERE name = %s

-- name: get_channel_for_update
SELECT name, type, config, secrets, enabled, created_at, updated_at
FROM notification_channels WHERE name = %s FOR UPDATE

-- name: insert_channel
INSERT INTO notification_channels (name, type, config, secrets, enabled)
VALUES (%s, %s, %s, %s, %s)
RETURNING name, type, config, secrets, enabled, created_at, updated_at

-- name: update_channel
UPDATE notification_channels SET type = %s, config = %s, secrets = %s, enabled = %s
WHERE name = %s
RETURNING name, type, config, secrets, enabled, created_at, updated_at

-- name: rules_using_channel
SELECT name FROM alert_rules WHERE %s = ANY(channels) ORDER BY name

-- name: delete_channel
DELETE FROM notification_channels WHERE name = %s RETURNING name
