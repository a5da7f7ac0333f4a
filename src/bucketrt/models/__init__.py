"""Model ports: families whose original modeling code does not run on the transformers bucketrt uses."""
