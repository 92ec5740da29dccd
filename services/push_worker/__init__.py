"""The push worker service: arrives with its channel's issue (see README, Roadmap)."""
