"""Placeholder: the social tables are being written."""
