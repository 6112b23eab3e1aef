"""Triage's own engine: paged KV cache, continuous batching, priority scheduling."""
