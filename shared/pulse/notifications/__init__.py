"""Notifications: accepting, reading and listing them."""
