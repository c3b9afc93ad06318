-- RTMH 009: signing in to the web dashboard.
--
-- web_sessions: a browser's sign-in, on behalf of an API token. Two kinds of row:
--   login_code  a one-time code in the link `rtmh up` (or `rtmh dashboard`) prints. Opening the
--               link exchanges it, once, for a session; it expires after minutes if unused.
--               The link never carries the token itself, so a browser history or a proxy log
--               that keeps the URL keeps nothing that still works.
--   session     what the browser's HttpOnly cookie holds; it acts as its token (same name on the
--               timeline, same scope) until it expires, the user signs out, or the token is
--               revoked (the join in session_principal checks that on every request).
-- Both read <lookup>_<secret> like a token: the lookup finds the row, only a salted SHA-256 of
-- the 256-bit secret is stored.

CREATE TABLE web_sessions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_id     bigint NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('login_code', 'session')),
    lookup       text NOT NULL UNIQUE,
    salt         bytea NOT NULL,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    -- a login code: when it was exchanged (it works once)
    used_at      timestamptz,
    -- a session: when its user signed out
    ended_at     timestamptz,
    CHECK (expires_at > created_at)
);

CREATE INDEX idx_web_sessions_token ON web_sessions (token_id);
CREATE INDEX idx_web_sessions_expires ON web_sessions (expires_at);

-- the notifications log (newest first, by channel or status) reads the primary key backwards;
-- this one serves "what went to this channel lately" without walking every other channel's rows
CREATE INDEX idx_alert_notifications_channel ON alert_notifications (channel, id);
