"""SQL layer: functions registered into DuckDB, the `transform` procedure and `sql.expression`."""
