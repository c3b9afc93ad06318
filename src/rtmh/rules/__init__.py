"""Stage 3: evaluate alert rules on the windows a batch touched and drive the incident state
machine; incident changes write the notification outbox in the same transaction."""
