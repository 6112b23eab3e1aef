"""The engine's OpenAI-compatible HTTP layer, in front of an `EngineClient`.

- `app`: the litestar app, its routes, and errors mapped to OpenAI's shape;
- `requests`: bodies parsed and validated into a `Generation` (or an embedding request);
- `generation`: a `Generation` run on the engine: choices, non-streamed bodies, usage, logprobs;
- `streams`: the server-sent-event streams of chat and legacy completions;
- `responses`: JSON and event-stream response helpers.
"""
