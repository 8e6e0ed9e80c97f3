"""Core: the entity model (datasets, functions, procedures), their registries and the catalog."""
