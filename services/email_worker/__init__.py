"""The email worker service: consumes `email.*` and delivers over SMTP."""
