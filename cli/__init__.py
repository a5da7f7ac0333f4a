"""bucketrt's command line: `bucketrt export`, `check`, `ops` (and `bench`)."""
