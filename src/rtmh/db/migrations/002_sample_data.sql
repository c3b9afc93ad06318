-- Sample alert rules and notification channels, so a fresh hub detects something out of the box.
-- The rules notify nobody until you list channels in alert_rules.channels (`rtmh up --demo`
-- routes two of them to its own loopback webhook).
-- The ratio rule judges windows of 50+ log lines: with 20, two unlucky errors among 20-39
-- lines of a healthy service (0.5 % errors) fired about once every two minutes across 20
-- services (rtmh bench detect). Edit or disable them freely: later migrations never rewrite
-- these rows.

INSERT INTO notification_channels (name, type, config, enabled) VALUES
    ('demo-webhook', 'webhook',
     '{"url": "http://127.0.0.1:9911/hooks/rtmh", "timeout_seconds": 5}', false),
    ('ops-slack', 'slack',
     '{"url": "https://hooks.slack.example/services/REPLACE/ME", "timeout_seconds": 5}', false)
ON CONFLICT (name) DO NOTHING;

INSERT INTO alert_rules (name, description, source, metric_type, aggregation, condition, threshold,
                         recovery_threshold, for_seconds, window_key_pattern, min_count,
                         no_data_seconds, resolve_after_seconds, severity, channels, enabled,
                         repeat_interval_seconds, runbook_url) VALUES
    ('high_error_rate',
     'More than 5% of a service''s log lines are errors',
     'error_rate_monitor', 'error_rate', 'value', '>', 0.05,
     0.02, 0, '*', 50, NULL, 20, 'high', '{}', true, 1800,
     'https://runbooks.example/rtmh/high-error-rate'),
    ('high_latency_p95',
     'p95 request latency above 500 ms',
     'latency_monitor', 'http_request_duration_ms', 'p95', '>', 500,
     400, 0, '*', 20, NULL, 20, 'medium', '{}', true, 1800,
     'https://runbooks.example/rtmh/high-latency'),
    ('high_cpu',
     'CPU above 90% for a minute',
     'resource_monitor', 'cpu_usage_percent', 'avg', '>', 90,
     NULL, 60, '*', 1, NULL, 30, 'medium', '{}', true, 3600, NULL),
    ('service_silent',
     'A service that was logging has sent nothing for two minutes',
     'no_data_monitor', 'log_count', 'count', '<', 1,
     NULL, 0, '*', 0, 120, 30, 'high', '{}', true, 3600,
     'https://runbooks.example/rtmh/service-silent')
ON CONFLICT (name) DO NOTHING;
