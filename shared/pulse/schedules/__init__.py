"""Recurring schedules: cron expressions in a time zone, and running them when they fall due."""
