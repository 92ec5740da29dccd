"""The REST gateway: validate, authenticate, persist, publish."""
