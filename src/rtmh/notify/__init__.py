"""Stage 4: deliver the notification outbox (webhook, Slack, email, PagerDuty, Alertmanager) with
retries, backoff and an idempotency key, recording every attempt."""
