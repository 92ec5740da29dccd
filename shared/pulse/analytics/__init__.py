"""Analytics: per-channel delivery statistics, per-minute throughput and queue depths for one tenant."""
