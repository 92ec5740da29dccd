"""Local stand-in for Pulse's external providers (SMTP today), with an inbox UI and fault injection."""
