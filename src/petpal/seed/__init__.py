"""Data sets: the demo's and generated ones at scale."""

# The published log-in of every account the demo and ``seed --users`` make.
DEMO_PASSWORD = "pawprints-on-the-porch"  # noqa: S105 - published demo login
# The most accounts ``seed --users`` generates: the data set is drawn in
# memory, 4.1 GB at its peak for 2,000,000 accounts (the largest size the
# benchmarks use), so about 10 GB here; a number far past it failed deep in
# numpy with a traceback (found by a trial).
MAX_USERS = 5_000_000
