-- Silences for people (rtmh.service.silences). The rules stage and the notifier read the active
-- ones with rules.sql's active_silences. A handful of rows: no index beyond the primary key.

-- name: insert_silence
INSERT INTO silences (matchers, starts_at, ends_at, comment, created_by)
VALUES (%s, %s, %s, %s, %s)
RETURNING id, matchers, starts_at, ends_at, comment, created_by, created_at

-- name: list_silences
-- %(state)s: 'active' (now inside), 'pending' (starts later), 'expired', or NULL for all
SELECT id, matchers, starts_at, ends_at, comment, created_by, created_at
FROM silences
WHERE %(state)s::text IS NULL
   OR (%(state)s = 'active' AND starts_at <= now() AND ends_at > now())
   OR (%(state)s = 'pending' AND starts_at > now())
   OR (%(state)s = 'expired' AND ends_at <= now())
ORDER BY ends_at DESC, id DESC
LIMIT %(limit)s

-- name: get_silence
SELECT id, matchers, starts_at, ends_at, comment, created_by, created_at
FROM silences WHERE id = %s

-- name: expire_silence
-- Ends it now; one that had not started yet ends before it starts (never mutes anything).
UPDATE silences
SET ends_at = now(), starts_at = least(starts_at, now() - interval '1 millisecond')
WHERE id = %s AND ends_at > now()
RETURNING id, matchers, starts_at, ends_at, comment, created_by, created_at
