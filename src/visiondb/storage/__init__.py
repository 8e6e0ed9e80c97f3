"""Storage: the DuckDB file, the content-addressed media store, image values and external databases."""
