"""Shared test helpers (real local servers, dataset paths) used by several test folders."""
