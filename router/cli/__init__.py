"""The `triage` command: `serve`, `engine` (our engine in its own process) and `simulate` (the
scheduling simulator of `policies/sim`, with its tables and plots)."""
