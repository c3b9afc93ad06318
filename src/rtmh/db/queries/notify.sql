-- Stage 4, the notifier: claims due alert_notifications rows, records each attempt's outcome
-- (rtmh.notify.outbox), and `rtmh notify test` reads a channel. The rules stage writes the rows
-- (db/queries/rules.sql, insert_notification); the active silences come from the same file
-- (active_silences), one query for both stages.
--
-- Every write that records an outcome is guarded by `status = 'sending' AND claimed_by = <me>
-- AND attempts = <the attempt I made>`: a notifier whose lease expired and was taken over cannot
-- overwrite the newer attempt's result (no row comes back). Final outcomes (sent, dead) also
-- append a 'notified' row to the incident's timeline in the same statement (a data-modifying
-- CTE), so each is atomic on an autocommit connection shared by many concurrent deliveries.

-- name: listen
-- The INSERT trigger on alert_notifications NOTIFYs this channel: a new row is claimed at once.
LISTEN rtmh_notifications

-- name: claim_due
-- Claims up to %(limit)s due rows in one statement. Due: pending/failed rows whose time has
-- come, and sending rows whose lease expired (their notifier died or hung) unless that was
-- already the one extra attempt beyond max_attempts (those are reaped, see reap_exhausted).
-- The lease is per channel (%(channels)s / %(leases)s, seconds), %(default_lease)s otherwise.
-- SKIP LOCKED: any number of notifiers claim side by side, each row by one of them per attempt.
UPDATE alert_notifications AS n
SET status = 'sending',
    claimed_by = %(notifier)s,
    claimed_until = now() + make_interval(secs => coalesce(
        (SELECT l.seconds
         FROM unnest(%(channels)s::text[], %(leases)s::float8[]) AS l(name, seconds)
         WHERE l.name = n.channel),
        %(default_lease)s::float8)),
    attempts = n.attempts + 1
WHERE n.id IN (
    SELECT id FROM alert_notifications
    WHERE (status IN ('pending', 'failed') AND next_attempt_at <= now())
       OR (status = 'sending' AND claimed_until < now() AND attempts <= max_attempts)
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING n.id, n.incident_id::text, n.channel, n.event, n.idempotency_key, n.attempts,
          n.max_attempts, n.payload, n.created_at

-- name: record_sent
WITH done AS (
    UPDATE alert_notifications
    SET status = 'sent', sent_at = now(), http_status = %(http_status)s,
        response_body = %(response_body)s, last_error = NULL, claimed_until = NULL
    WHERE id = %(id)s AND status = 'sending' AND claimed_by = %(notifier)s
      AND attempts = %(attempts)s
    RETURNING id, incident_id, channel, event, attempts, status, http_status, last_error,
              claimed_by
),
timeline AS (
    INSERT INTO incident_events (incident_id, event_type, details, actor)
    SELECT incident_id, 'notified',
           jsonb_strip_nulls(jsonb_build_object(
               'notification_id', id, 'channel', channel, 'event', event,
               'attempts', attempts, 'status', status, 'http_status', http_status,
               'error', last_error, 'notifier', claimed_by)),
           'rtmh'
    FROM done
    WHERE incident_id IS NOT NULL
)
SELECT id, channel FROM done

-- name: record_dead
-- Attempts exhausted, a permanent failure, or a missing/disabled/misconfigured channel.
WITH done AS (
    UPDATE alert_notifications
    SET status = 'dead', http_status = %(http_status)s, response_body = %(response_body)s,
        last_error = %(error)s, claimed_until = NULL
    WHERE id = %(id)s AND status = 'sending' AND claimed_by = %(notifier)s
      AND attempts = %(attempts)s
    RETURNING id, incident_id, channel, event, attempts, status, http_status, last_error,
              claimed_by
),
timeline AS (
    INSERT INTO incident_events (incident_id, event_type, details, actor)
    SELECT incident_id, 'notified',
           jsonb_strip_nulls(jsonb_build_object(
               'notification_id', id, 'channel', channel, 'event', event,
               'attempts', attempts, 'status', status, 'http_status', http_status,
               'error', last_error, 'notifier', claimed_by)),
           'rtmh'
    FROM done
    WHERE incident_id IS NOT NULL
)
SELECT id, channel FROM done

-- name: record_failed
-- A retryable failure: due again after the backoff (%(delay)s seconds, computed by the notifier).
UPDATE alert_notifications
SET status = 'failed', next_attempt_at = now() + make_interval(secs => %(delay)s::float8),
    http_status = %(http_status)s, response_body = %(response_body)s, last_error = %(error)s,
    claimed_until = NULL
WHERE id = %(id)s AND status = 'sending' AND claimed_by = %(notifier)s
  AND attempts = %(attempts)s
RETURNING id

-- name: record_suppressed
-- A silence created after the row was queued: nothing was sent, so the attempt is given back.
UPDATE alert_notifications
SET status = 'suppressed', suppressed_by = %(silence)s, attempts = attempts - 1,
    claimed_by = NULL, claimed_until = NULL
WHERE id = %(id)s AND status = 'sending' AND claimed_by = %(notifier)s
  AND attempts = %(attempts)s
RETURNING id

-- name: release_claimed
-- On stop, rows whose attempt was cancelled go back to pending at once (the attempt stays
-- counted: it may have reached the receiver, which deduplicates on the idempotency key).
UPDATE alert_notifications
SET status = 'pending', claimed_until = NULL, next_attempt_at = now(),
    last_error = 'the notifier stopped during this attempt; it is retried'
WHERE id = ANY(%(ids)s) AND status = 'sending' AND claimed_by = %(notifier)s
RETURNING id

-- name: reap_exhausted
-- Expired leases of an attempt already beyond max_attempts (a notifier died during the extra
-- recovery attempt): dead, so a notification that kills its notifier cannot loop forever.
WITH done AS (
    UPDATE alert_notifications
    SET status = 'dead', claimed_until = NULL, last_error = %(error)s
    WHERE status = 'sending' AND claimed_until < now() AND attempts > max_attempts
    RETURNING id, incident_id, channel, event, attempts, status, http_status, last_error,
              claimed_by
),
timeline AS (
    INSERT INTO incident_events (incident_id, event_type, details, actor)
    SELECT incident_id, 'notified',
           jsonb_strip_nulls(jsonb_build_object(
               'notification_id', id, 'channel', channel, 'event', event,
               'attempts', attempts, 'status', status, 'http_status', http_status,
               'error', last_error, 'notifier', claimed_by)),
           'rtmh'
    FROM done
    WHERE incident_id IS NOT NULL
)
SELECT id, channel FROM done

-- name: seconds_until_next_due
-- Seconds until the earliest pending/failed row is due (negative: overdue; NULL: none): how long
-- the notifier may sleep when no NOTIFY comes.
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM alert_notifications
WHERE status IN ('pending', 'failed')

-- name: load_channels
-- Read on every claim, so an edited channel applies to the next notification without a restart.
SELECT name, type, config, secrets, enabled FROM notification_channels ORDER BY name

-- name: load_channel
-- `rtmh notify test CHANNEL`
SELECT name, type, config, secrets, enabled FROM notification_channels WHERE name = %s

-- name: channel_names
SELECT name FROM notification_channels ORDER BY name

-- name: schema_ready
-- The notifier's tables exist (migrations applied): `rtmh notifier` says so instead of failing.
SELECT to_regclass('alert_notifications') IS NOT NULL
