"""Tests for remote SQL sources, IDX/Open Images imports and resumable HTTP imports."""
