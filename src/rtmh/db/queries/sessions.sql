-- Dashboard sign-in (rtmh.service.sessions): one-time login codes and browser sessions, both
-- acting for an API token. The secret part is compared with the stored salted hash in Python.

-- name: insert_secret
INSERT INTO web_sessions (token_id, kind, lookup, salt, secret_hash, expires_at)
VALUES (%(token_id)s, %(kind)s, %(lookup)s, %(salt)s, %(secret_hash)s,
        now() + make_interval(secs => %(ttl_s)s))
RETURNING id, expires_at

-- name: live_token_by_name
SELECT id FROM api_tokens WHERE name = %s AND revoked_at IS NULL

-- name: code_by_lookup
-- a code not used yet, not expired, whose token is live
SELECT w.id, w.token_id, w.salt, w.secret_hash
FROM web_sessions w
JOIN api_tokens t ON t.id = w.token_id AND t.revoked_at IS NULL
WHERE w.lookup = %s AND w.kind = 'login_code' AND w.used_at IS NULL AND w.expires_at > now()

-- name: use_code
-- the single use: of two browsers opening the same link at once, one gets the row back
UPDATE web_sessions SET used_at = now()
WHERE id = %s AND used_at IS NULL
RETURNING id

-- name: session_principal
-- a live session of a live token: who it acts as
SELECT w.id, w.salt, w.secret_hash, t.id AS token_id, t.name, t.scope
FROM web_sessions w
JOIN api_tokens t ON t.id = w.token_id AND t.revoked_at IS NULL
WHERE w.lookup = %s AND w.kind = 'session' AND w.ended_at IS NULL AND w.expires_at > now()

-- name: end_session
UPDATE web_sessions SET ended_at = now()
WHERE lookup = %s AND kind = 'session' AND ended_at IS NULL

-- name: prune
-- sessions and codes a day past their end; the API runs it now and then
DELETE FROM web_sessions WHERE expires_at < now() - interval '1 day'
