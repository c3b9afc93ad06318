-- API tokens (rtmh.service.tokens). A token's lookup part finds its row through the UNIQUE
-- index on api_tokens.lookup; the secret part is compared with the stored salted hash in Python.

-- name: insert_token
INSERT INTO api_tokens (name, scope, lookup, salt, secret_hash)
VALUES (%(name)s, %(scope)s, %(lookup)s, %(salt)s, %(secret_hash)s)
RETURNING id, name, scope, created_at, last_used_at, revoked_at

-- name: token_by_lookup
SELECT id, name, scope, salt, secret_hash, last_used_at
FROM api_tokens
WHERE lookup = %s AND revoked_at IS NULL

-- name: touch_token
-- at most once a minute per token: a read-heavy dashboard must not turn every GET into a write
UPDATE api_tokens SET last_used_at = now()
WHERE id = %s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')

-- name: list_tokens
SELECT id, name, scope, created_at, last_used_at, revoked_at
FROM api_tokens
WHERE revoked_at IS NULL OR %(include_revoked)s
ORDER BY id

-- name: revoke_token
-- by name (the live token of that name) or by id
UPDATE api_tokens SET revoked_at = now()
WHERE revoked_at IS NULL AND (name = %(key)s OR id::text = %(key)s)
RETURNING id, name, scope, created_at, last_used_at, revoked_at
