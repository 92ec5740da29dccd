"""Recipients: end users' addresses, channel preferences, time zone, quiet hours and locale."""
