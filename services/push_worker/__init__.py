"""The push worker service: consumes `push.*` and delivers over Firebase Cloud Messaging's HTTP v1 API."""
