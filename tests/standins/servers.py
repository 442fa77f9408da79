"""Local stand-ins for servers that cannot run here (no GPU): they serve exactly the
documented request/response shapes, deterministically, and record what they got.

* SGLang native ``POST /generate`` with token logprobs, ``GET /get_model_info``,
  ``GET /v1/models``. Shapes from the SGLang docs, "Sampling Parameters" --
  the ``/generate`` endpoint table (text, sampling_params, return_logprob,
  logprob_start_len, top_logprobs_num, token_ids_logprob,
  return_text_in_logprobs, ...; https://docs.sglang.io/basic_usage/sampling_params.html,
  object ``io_struct.py::GenerateReqInput``) and "SGLang Native APIs"
  (https://docs.sglang.io/basic_usage/native_api.html): the answer is
  ``{"text", "output_ids", "meta_info"}`` and, with ``return_logprob``,
  ``meta_info`` holds ``input_token_logprobs`` / ``output_token_logprobs``
  (one ``[logprob, token_id, text|null]`` per position) and
  ``input_token_ids_logprobs`` / ``output_token_ids_logprobs`` (one list of
  such triples per position, for the ids in ``token_ids_logprob``).
* vLLM ``POST /pooling`` and ``GET /v1/models``. Shapes from the vLLM docs,
  "OpenAI-Compatible Server" -> Pooling API and the example
  ``examples/online_serving/openai_pooling_client.py``
  (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html#pooling-api):
  request ``{"model", "input", ...}``; answer ``PoolingResponse``:
  ``{"id": "pool-...", "object": "list", "created", "model",
  "data": [{"index", "object": "pooling", "data": [[...], ...]}], "usage"}``.
  For Qwen2.5-Math-PRM (STEP pooler, softmax) ``data`` is one ``[p_bad, p_good]``
  row per ``<extra_0>``.
* OpenAI ``POST /v1/completions`` as vLLM serves it
  (https://platform.openai.com/docs/api-reference/completions and vLLM's extra
  parameters ``include_stop_str_in_output`` / choice field ``stop_reason``), for
  failure tests: it can answer 503 a number of times, or hang.

Run in a thread (``StandinServer(kind).start()``) or as a process
(``python tests/standins/servers.py --kind openai --port N``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# GenerateReqInput fields we may send (SGLang answers 400 on unknown fields: the dataclass takes no others)
SGLANG_GENERATE_FIELDS = {
    "text", "input_ids", "sampling_params", "rid", "return_logprob", "logprob_start_len", "top_logprobs_num",
    "token_ids_logprob", "return_text_in_logprobs", "stream", "lora_path", "custom_logit_processor",
    "return_hidden_states", "image_data", "audio_data", "input_embeds",
}
SGLANG_SAMPLING_FIELDS = {
    "max_new_tokens", "stop", "stop_token_ids", "temperature", "top_p", "top_k", "min_p", "frequency_penalty",
    "presence_penalty", "min_new_tokens", "json_schema", "regex", "ebnf", "n", "ignore_eos",
    "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim", "custom_params",
}
VLLM_POOLING_FIELDS = {
    "model", "input", "encoding_format", "dimensions", "user", "truncate_prompt_tokens", "add_special_tokens",
    "priority", "request_id", "task", "use_activation", "softmax", "normalize", "mm_processor_kwargs",
}
OPENAI_COMPLETION_FIELDS = {
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user",
    # vLLM extras
    "include_stop_str_in_output", "top_k", "min_p", "repetition_penalty", "ignore_eos", "skip_special_tokens",
}


def run(coro):
    """``asyncio.run`` for a test's coroutine, closing every HTTP backend's connections
    before the loop ends (no sockets left open)."""
    import asyncio

    from ets.backends.http import aclose_all

    async def main():
        try:
            return await coro
        finally:
            await aclose_all()

    return asyncio.run(main())


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unit(*parts: str) -> float:
    d = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return int(d[:12], 16) / float(16 ** 12)


def ntokens(text: str) -> int:
    return max(1, len(text.split()))


class StandinServer:
    """One stand-in server on 127.0.0.1 (a free port unless given)."""

    def __init__(self, kind: str, *, model: str = "standin-model", port: int = 0, fail_first: int = 0,
                 fail_status: int = 503, hang: bool = False, ignore_n: bool = False) -> None:
        if kind not in ("sglang", "vllm-pooling", "openai"):
            raise ValueError(kind)
        self.kind = kind
        self.model = model
        self.fail_first = fail_first  # answer fail_status to this many requests first
        self.fail_status = fail_status
        self.hang = hang  # never answer POSTs
        self.ignore_n = ignore_n  # answer one choice whatever n is (llama-cpp-python does)
        self.requests: list[tuple[str, str, dict | None]] = []  # (method, path, body)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "StandinServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "StandinServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def posts(self, path: str) -> list[dict]:
        return [b for m, p, b in self.requests if m == "POST" and p == path]

    # ------------------------------------------------------------------ answers
    def models(self) -> dict:
        owner = {"sglang": "sglang", "vllm-pooling": "vllm", "openai": "vllm"}[self.kind]
        return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                            "owned_by": owner, "root": self.model, "parent": None,
                                            "max_model_len": 4096}]}

    def sglang_generate(self, body: dict) -> tuple[int, dict]:
        unknown = set(body) - SGLANG_GENERATE_FIELDS
        sp = body.get("sampling_params") or {}
        unknown |= {f"sampling_params.{k}" for k in set(sp) - SGLANG_SAMPLING_FIELDS}
        if unknown:
            return 400, {"error": {"message": f"unexpected fields {sorted(unknown)}"}}
        text = body.get("text")
        if not isinstance(text, str):
            return 400, {"error": {"message": "this stand-in takes one text"}}
        n_in = ntokens(text)
        start = body.get("logprob_start_len", -1)
        if start is None or start < 0:
            start = n_in - 1
        ids = body.get("token_ids_logprob") or []
        # the PRM's "belief" in the last step, made up from the text: p(good) in (0.05, 0.95)
        p_good = 0.05 + 0.9 * unit("score", text)
        rest = 1.0 - p_good
        lps = {}
        for j, tid in enumerate(ids):
            lps[tid] = math.log(p_good * 0.9) if j == 0 else math.log(rest * 0.9 / max(1, len(ids) - 1))
        out_id = ids[0] if ids else 0
        meta: dict = {
            "id": "standin", "finish_reason": {"type": "length", "length": 1},
            "prompt_tokens": n_in, "completion_tokens": 1, "cached_tokens": max(0, start),
        }
        if body.get("return_logprob"):
            positions = n_in - start
            meta["input_token_logprobs"] = [[None if start + i == 0 else -1.0, 1, None] for i in range(positions)]
            meta["output_token_logprobs"] = [[lps.get(out_id, -0.1), out_id, None]]
            if ids:
                meta["input_token_ids_logprobs"] = [None if start + i == 0 else [[-2.0, t, None] for t in ids]
                                                    for i in range(positions)]
                meta["output_token_ids_logprobs"] = [[[lps[t], t, None] for t in ids]]
            if body.get("top_logprobs_num"):
                meta["input_top_logprobs"] = [None] * positions
                meta["output_top_logprobs"] = [[[lps.get(out_id, -0.1), out_id, None]]]
        return 200, {"text": "+", "output_ids": [out_id], "meta_info": meta}

    def vllm_pooling(self, body: dict) -> tuple[int, dict]:
        unknown = set(body) - VLLM_POOLING_FIELDS
        if unknown:
            return 400, {"object": "error", "message": f"unexpected fields {sorted(unknown)}", "type": "BadRequestError",
                         "code": 400}
        if body.get("model") not in (None, self.model):
            return 404, {"object": "error", "message": f"The model `{body.get('model')}` does not exist.",
                         "type": "NotFoundError", "code": 404}
        text = body.get("input")
        if not isinstance(text, str):
            return 400, {"object": "error", "message": "this stand-in takes one input string", "code": 400}
        pieces = text.split("<extra_0>")
        rows = []
        for i in range(len(pieces) - 1):
            p = 0.05 + 0.9 * unit("qwen", "<extra_0>".join(pieces[: i + 1]))
            rows.append([1.0 - p, p])
        n = ntokens(text)
        return 200, {"id": "pool-standin", "object": "list", "created": int(time.time()), "model": self.model,
                     "data": [{"index": 0, "object": "pooling", "data": rows}],
                     "usage": {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0,
                               "prompt_tokens_details": None}}

    def openai_completions(self, body: dict) -> tuple[int, dict]:
        unknown = set(body) - OPENAI_COMPLETION_FIELDS
        if unknown:
            return 400, {"object": "error", "message": f"unexpected fields {sorted(unknown)}", "code": 400}
        if body.get("model") != self.model:
            return 404, {"object": "error", "message": f"The model `{body.get('model')}` does not exist.",
                         "code": 404}
        prompt = body["prompt"]
        n = 1 if self.ignore_n else int(body.get("n", 1))
        stops = body.get("stop") or []
        if isinstance(stops, str):
            stops = [stops]
        depth = prompt.count("\n")
        choices = []
        total = 0
        for i in range(n):
            u = unit(prompt, str(i), str(body.get("seed")))
            words = ["w%d" % int(unit("w", prompt, str(i), str(j)) * 50) for j in range(2 + int(u * 5))]
            if depth >= 2 and u < 0.6:
                words += ["The", "answer", "is:", str(int(u * 10))]
            text = " ".join(words) + "\n"
            finish, stop_reason = "length", None
            max_tokens = int(body.get("max_tokens", 16))
            toks = text.split(" ")
            if len(toks) > max_tokens:
                text = " ".join(toks[:max_tokens])
            else:
                hit = [s for s in stops if s in text]
                if hit:
                    cut = min(text.index(s) for s in hit)
                    s = next(s for s in hit if text.index(s) == cut)
                    text = text[:cut] + (s if body.get("include_stop_str_in_output") else "")
                    finish, stop_reason = "stop", s
                else:
                    finish = "stop"
            count = len(text.split(" "))
            total += count
            choice = {"index": i, "text": text, "finish_reason": finish, "stop_reason": stop_reason}
            if body.get("logprobs") is not None:
                tokens = text.split(" ")
                choice["logprobs"] = {"tokens": tokens, "token_logprobs": [-0.5] * len(tokens),
                                      "text_offset": list(range(len(tokens))), "top_logprobs": None}
            else:
                choice["logprobs"] = None
            choices.append(choice)
        p = ntokens(prompt)
        return 200, {"id": "cmpl-standin", "object": "text_completion", "created": int(time.time()),
                     "model": self.model, "choices": choices,
                     "usage": {"prompt_tokens": p, "completion_tokens": total, "total_tokens": p + total}}

    # ------------------------------------------------------------------ HTTP
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with server._lock:
                    server.requests.append(("GET", self.path, None))
                if self.path in ("/v1/models",):
                    return self._send(200, server.models())
                if self.path == "/health":
                    return self._send(200, {})
                if self.path == "/get_model_info" and server.kind == "sglang":
                    return self._send(200, {"model_path": server.model, "tokenizer_path": server.model,
                                            "is_generation": True})
                return self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    return self._send(400, {"error": {"message": "invalid JSON"}})
                with server._lock:
                    server.requests.append(("POST", self.path, body))
                    failing = server.fail_first > 0
                    if failing:
                        server.fail_first -= 1
                if server.hang:
                    time.sleep(3600)
                if failing:
                    return self._send(server.fail_status, {"error": {"message": "stand-in failure"}})
                routes = {("sglang", "/generate"): server.sglang_generate,
                          ("vllm-pooling", "/pooling"): server.vllm_pooling,
                          ("openai", "/v1/completions"): server.openai_completions}
                fn = routes.get((server.kind, self.path))
                if fn is None:
                    return self._send(404, {"detail": "Not Found"})
                status, payload = fn(body)
                return self._send(status, payload)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", required=True, choices=("sglang", "vllm-pooling", "openai"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="standin-model")
    args = parser.parse_args()
    server = StandinServer(args.kind, model=args.model, port=args.port)
    print(f"ready {server.url}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
