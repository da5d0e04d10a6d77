"""The `iam-writers` command line: builder -> pipelines -> models -> tuning/export."""
