"""Delta tables (the Lake), bronze ingest, silver with quarantine, row accounting."""
