"""Time: scheduled sends, quiet hours, recurring schedules."""
