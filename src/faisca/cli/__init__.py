"""The `faisca` command: serve, models, show."""
