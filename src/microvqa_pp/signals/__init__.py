"""Consistency signals per QA (stage `score`)."""
