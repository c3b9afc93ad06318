"""`rtmh up`: the whole hub on one machine. Embedded servers (unless configured), migrations,
the worker and notifier as supervised children, the demo story, and a live terminal view."""
