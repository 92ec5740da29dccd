"""`pulse-admin`: the operator's command line."""
