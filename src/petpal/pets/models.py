"""Placeholder: the pets tables are being written."""
