"""Precise prefix state from the backends' own KV-cache events (vLLM's `--kv-events-config`).

A subscriber per backend (subscriber.py) feeds a block index (block_index.py) whose hashes the
router rebuilds from the events' token ids (block_hashes.py), so that every router replica
computes the same index for the same backend. A request is tokenized with the model's chat
template (prompt_tokens.py) and matched against it.
"""
