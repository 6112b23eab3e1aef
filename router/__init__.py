"""Triage's router: the OpenAI-compatible HTTP edge, priority resolution, placement and relay.

It never imports torch or the engine: a sidecar must start fast and stay small.
"""
