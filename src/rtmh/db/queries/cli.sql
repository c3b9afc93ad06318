-- Queries of the `rtmh` command itself (rtmh/cli.py).

-- name: connection_identity
-- `rtmh migrate --test`: who we are connected as, and to which server version
SELECT current_user, version()
