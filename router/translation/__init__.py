"""Other APIs over chat completions, for backends that do not serve them (our engine, plain
chat endpoints): OpenAI's Responses (`responses`) and Anthropic's Messages (`messages`), each
as a request translated to a chat body and the chat answer, plain or streamed, translated back.
Pure: bytes and dicts in, bytes and dicts out."""
