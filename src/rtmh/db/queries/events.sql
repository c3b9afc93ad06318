-- Raw events for people (rtmh.service.events): a search over raw_events, newest first,
-- keyset-paginated. Read-only; the ingest stage writes the table (ingest.sql).
--
-- Two orders, because raw_events has no index that orders every row by event time:
--   * with a service: by (event_time, id), from idx_raw_events_service_time (service,
--     event_time) scanned over [since, until) for that service;
--   * without one: by id, i.e. by arrival (ids are handed out as rows are written), a backward
--     scan of each partition's primary key (id, service, created_at) that stops once a page is
--     full. Ordering those rows by event_time instead means reading and sorting every row of the
--     range (a seq scan of the day's partitions: ~470 ms for an hour of a 10-million-row day).
-- Both filter on event_time in [since, until). Partition pruning: raw_events is partitioned by
-- created_at, so both also say created_at >= %(created_from)s, which is since - 70 minutes
-- (events.ARRIVAL_SLACK, given as a constant so partitions are pruned when planning). That loses
-- nothing: decode never stores an event_time more than an hour after it decodes the message
-- (later ones get the broker time and the ts_out_of_range flag, shapes.DEFAULT_MAX_FUTURE_S),
-- created_at is set after that, and 10 minutes cover a worker clock ahead of the database's.
-- There is no upper bound on created_at: a message may arrive (consumer lag, a backlog after an
-- outage) any time after its event time, and a search of the outage must still find it.
--
-- Filters left NULL fold away when the statement is planned with its parameters (the API never
-- prepares statements). %(pattern)s is an ILIKE pattern whose user text has its \ % _ escaped.

-- name: list_events_by_service
-- idx_raw_events_service_time over [since, until) for the service (per partition), the tie on
-- event_time broken by id. The explicit event_time <= %(after_time)s bounds the index scan of a
-- later page (a row comparison bounds it only through its first column, and only when the
-- planner sees that). level, topic and the text are checked on the rows the index returns.
-- Measured (PostgreSQL 18, 5 million rows over 12 h, 40 services, 1 %% errors, i.e. the hourly
-- volume of a 10-million-row day): one service, level=error, last hour reads every row of the
-- service in that hour (~10,400 heap pages) for ~100 errors: p95 15 ms cached, 60-120 ms when
-- the pages have to be read. A partial index ON raw_events (service, event_time) WHERE level IN
-- ('error', 'fatal') takes it to 0.5 ms (1.6 MB for 5 million rows); it is not created here,
-- because every index on raw_events slows ingest. Without level: p95 1 ms.
SELECT id, topic, kafka_partition AS partition, kafka_offset AS "offset", generation,
       record_index, service, host, level, event_time, created_at, data, flags
FROM raw_events
WHERE service = %(service)s::text
  AND event_time >= %(since)s::timestamptz
  AND event_time < %(until)s::timestamptz
  AND created_at >= %(created_from)s::timestamptz
  AND (%(levels)s::text[] IS NULL OR level = ANY(%(levels)s::text[]))
  AND (%(topic)s::text IS NULL OR topic = %(topic)s::text)
  AND (%(pattern)s::text IS NULL
       OR data->>'msg' ILIKE %(pattern)s::text ESCAPE '\'
       OR data->>'message' ILIKE %(pattern)s::text ESCAPE '\')
  AND (%(after_time)s::timestamptz IS NULL
       OR (event_time <= %(after_time)s::timestamptz
           AND (event_time, id) < (%(after_time)s::timestamptz, %(after_id)s::bigint)))
ORDER BY event_time DESC, id DESC
LIMIT %(limit)s

-- name: list_events
-- Every service: by id, newest arrival first, from each partition's primary key scanned
-- backward (Merge Append across the partitions left after pruning); id < %(after_id)s is an
-- index condition. Everything else is checked on the rows the scan returns, so it reads about
-- limit / selectivity rows from the newest on. Measured as above: last hour, p95 1 ms; with
-- level=error 2 ms; a rare text (1 row in 1,000) 200 ms. Its weak spot is a range that ended
-- long ago: the scan walks every row that arrived after it (an hour's window 3 h back: ~600 ms)
-- and a statement timeout (events.SEARCH_TIMEOUT_MS) ends a search that would read too long.
-- An index on raw_events (event_time) would let this order by event time too, at ~2 ms for any
-- window; not created, for the same reason as above.
SELECT id, topic, kafka_partition AS partition, kafka_offset AS "offset", generation,
       record_index, service, host, level, event_time, created_at, data, flags
FROM raw_events
WHERE event_time >= %(since)s::timestamptz
  AND event_time < %(until)s::timestamptz
  AND created_at >= %(created_from)s::timestamptz
  AND (%(levels)s::text[] IS NULL OR level = ANY(%(levels)s::text[]))
  AND (%(topic)s::text IS NULL OR topic = %(topic)s::text)
  AND (%(pattern)s::text IS NULL
       OR data->>'msg' ILIKE %(pattern)s::text ESCAPE '\'
       OR data->>'message' ILIKE %(pattern)s::text ESCAPE '\')
  AND (%(after_id)s::bigint IS NULL OR id < %(after_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s

-- name: search_timeout
-- For the search's own transaction only (is_local): a search that would read too long is
-- cancelled instead of holding a pooled connection and the disk. Milliseconds, as text.
SELECT set_config('statement_timeout', %s, true)
