"""Pulse: the shared library behind every Pulse service (domain logic, persistence, messaging)."""
