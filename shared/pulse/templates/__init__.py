"""Templates: reusable content rendered with Jinja2 in a sandbox when a send names one."""
