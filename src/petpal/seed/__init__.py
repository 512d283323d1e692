"""Data sets: the demo's and generated ones at scale."""

# The published log-in of every account the demo and ``seed --users`` make.
DEMO_PASSWORD = "pawprints-on-the-porch"  # noqa: S105 - published demo login
