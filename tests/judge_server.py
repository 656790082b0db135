"""A local HTTP server on loopback implementing OpenAI's `POST /v1/chat/completions`, standing in for a served
VLM judge (no VLM can run on these machines). It really decodes each request's base64 image and answers from
it: the image's mean brightness b in [0, 1] becomes the number answer "Score: {10 b}" or, when logprobs are
asked for, a first token with P("Yes") = 0.9 b and P(" no") = 0.9 (1 - b) among its top logprobs.

Markers in the image's prompt (which reaches the server inside the judge's question) change the answer:
`[slow=S]` waits S seconds, `[fail=K]` answers 500 to the first K attempts of that question, `[status=N]`
always answers N, `[malformed]` answers words without a number or Yes/No, `[badjson]` sends a body that is
not JSON, `[echo]` answers 400 with the request's headers in its body, and `[echo=SHAPE]` echoes the request's
Authorization header in one of the reply shapes of `ECHO_SHAPES`. `JudgeServer(echo=True)` echoes it in every
answer that it scores as usual, in the text after the answer and in a field of its own. The server counts
requests in flight (`max_in_flight`) and keeps each request's headers, body, decoded image size and the score
it meant to give (`score`, the brightness).
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

# How `[echo=SHAPE]` carries the header `auth` ("Bearer KEY"); b is the image's brightness.
ECHO_SHAPES = {
    "no_choices": lambda auth, b: (200, json.dumps({"error": "no model loaded", "you_sent": auth})),
    "text": lambda auth, b: (200, json.dumps(_completion(f"Request from {auth}."))),  # no number but the key's
    "number": lambda auth, b: (200, json.dumps(_completion(f"{auth} Score: {10 * b:.4f}"))),  # the key's first
    "tail": lambda auth, b: (200, json.dumps(_completion(f"key ...{auth[-14:]} refused"))),  # its last characters
    "url": lambda auth, b: (200, json.dumps(_completion(
        f"see /login?key={urllib.parse.quote(auth.removeprefix('Bearer '), safe='')}"))),
    "unicode": lambda auth, b: (200, json.dumps(_completion("@")).replace(
        '"@"', '"' + "".join(f"\\u{ord(c):04x}" for c in auth) + '"')),  # JSON's \u escapes, every character
    "400": lambda auth, b: (400, json.dumps({"error": f"invalid key {auth}"})),
    "500": lambda auth, b: (500, json.dumps({"error": f"upstream rejected {auth}"})),
    "nonjson": lambda auth, b: (200, f"<html>proxy error for {auth}</html>"),
}


class JudgeServer:
    """`with JudgeServer(api_key=None, echo=False) as server:` serves on `server.base_url` until the block ends."""

    def __init__(self, api_key: str | None = None, echo: bool = False):
        self.api_key, self.echo = api_key, echo
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.requests: list[dict] = []  # {"headers": {...}, "body": {...}}
        self.attempts: Counter[str] = Counter()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> JudgeServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = 0
            self.requests.clear()
            self.attempts.clear()

    def answer(self, headers: dict[str, str], body: dict) -> tuple[int, bytes]:
        """(status, response body) for one request."""
        content = body["messages"][0]["content"]
        question = next(part["text"] for part in content if part["type"] == "text")
        url = next(part["image_url"]["url"] for part in content if part["type"] == "image_url")
        image = decode_image(url)
        brightness = float(np.asarray(image, dtype=np.float64).mean() / 255)
        with self.lock:
            self.requests.append({"headers": headers, "body": body, "image_size": image.size, "score": brightness})
            self.attempts[question] += 1
            attempt = self.attempts[question]
        auth = headers.get("authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return 401, b'{"error": "Unauthorized"}'
        if "[echo]" in question:  # a careless proxy that echoes the request's headers in its error
            return 400, json.dumps({"error": "bad request", "headers": headers}).encode()
        if match := re.search(r"\[echo=(\w+)\]", question):
            status, text = ECHO_SHAPES[match.group(1)](auth, brightness)
            return status, text.encode()
        if match := re.search(r"\[slow=([\d.]+)\]", question):
            time.sleep(float(match.group(1)))
        if match := re.search(r"\[status=(\d+)\]", question):
            return int(match.group(1)), b'{"error": "as asked"}'
        if (match := re.search(r"\[fail=(\d+)\]", question)) and attempt <= int(match.group(1)):
            return 500, b'{"error": "injected failure"}'
        if "[badjson]" in question:
            return 200, b"<html>Bad Gateway</html>"
        if body.get("logprobs"):
            reply = _yes_no_completion(brightness, "[malformed]" in question)
        else:
            reply = _completion("I cannot judge this image." if "[malformed]" in question
                                else f"Score: {10 * brightness:.4f}")
        if self.echo:  # scored as usual, the header riding along
            reply["choices"][0]["message"]["content"] += f" (asked by {auth})"
            reply["you_sent"] = auth
        return 200, json.dumps(reply).encode()


def decode_image(data_url: str) -> Image.Image:
    """The RGB image of a `data:image/png|jpeg;base64,` URL (raises on anything else)."""
    header, payload = data_url.split(",", 1)
    assert re.fullmatch(r"data:image/(png|jpeg);base64", header), header
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format.lower() == header[len("data:image/"):].split(";")[0], image.format
    return image.convert("RGB")


def _completion(text: str, logprobs: dict | None = None) -> dict:
    return {"id": "cmpl-test", "object": "chat.completion", "model": "judge",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": text}}]}


def _yes_no_completion(brightness: float, malformed: bool) -> dict:
    def entry(token: str, p: float) -> dict:
        return {"token": token, "logprob": math.log(max(p, 1e-300)), "bytes": list(token.encode())}

    if malformed:
        top = [entry("Maybe", 0.6), entry("Perhaps", 0.4)]
    else:  # 10% of the mass on a third token, which the judge must leave out
        top = [entry("Yes", 0.9 * brightness), entry(" no", 0.9 * (1 - brightness)), entry("The", 0.1)]
    first = max(top, key=lambda e: e["logprob"])
    return _completion(first["token"], {"content": [{**first, "top_logprobs": top}]})


def _handler(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                if self.path != "/v1/chat/completions":
                    status, data = 404, b'{"error": "not found"}'
                else:
                    status, data = server.answer({k.lower(): v for k, v in self.headers.items()}, body)
            finally:
                with server.lock:
                    server.in_flight -= 1
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout test)
                pass

        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

    return Handler
