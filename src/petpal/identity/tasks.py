"""Identity has no background jobs yet."""
