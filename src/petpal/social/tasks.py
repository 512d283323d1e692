"""No jobs yet."""
