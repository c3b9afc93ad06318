"""`rtmh bench`: measured throughput and latency of each stage, printed and written as JSON."""
