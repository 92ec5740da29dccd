"""The audit log: who changed what in a tenant's configuration, and when."""
