"""Time below the domains: wall clocks in IANA zones (DST-aware), quiet hours, a tenant's timing policy."""
