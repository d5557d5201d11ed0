"""`fim-server http` end to end: a real worker on a tiny random model, the real front-end process,
and the clients' own SDKs (openai, ollama) next to plain HTTP for the other APIs.

Answers are compared with what the worker gives for the same input through WorkerClient (with
kv_reuse off, so that neither side's earlier requests change them). Cancellation, latest-wins and
joined requests use SLOW requests (hundreds of masked positions, one committed per full forward)
and are observed in the stats of the front-end (`GET /fim/stats`) and of the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from fim_server.http.fimtokens import split_prompt
from fim_server.http.job import FimJob, Decoding, post_filter, with_extra
from fim_server.wire.client import SyncWorkerClient, WorkerClient, WorkerUnavailable
from fim_server.wire.spawn import SpawnedWorker

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\nprint(add(1, 2))\n"
EXACT = {"length": "fixed", "kv_reuse": False}           # answers comparable with the worker's own
SLOW = {"max_tokens": 700, "cache": "none", "threshold": 1.0, "length": "fixed", "block_size": 700}
MEDIUM = {**SLOW, "max_tokens": 160, "block_size": 160}
READY_TIMEOUT = 90


# ---------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def sock_dir():
    path = tempfile.mkdtemp(prefix="fimh-")          # ipc:// paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def worker(tiny_model, sock_dir):
    w = SpawnedWorker(f"ipc://{sock_dir}/w.sock", Path(sock_dir) / "worker.log", model=str(tiny_model),
                      threads=1, extra=("--device", "cpu", "--max-batch", "8", "--batch-wait-ms", "20"),
                      timeout=READY_TIMEOUT)
    yield w
    assert w.stop() == 0, w.log()


class HttpProcess:
    """`fim-server http` as a user starts it; `url` once it printed `listening URL` (and `ready URL`
    when `ready` is asked for)."""

    def __init__(self, *args: str, ready: bool = True, log_dir: str | None = None):
        self.log = Path(log_dir or tempfile.mkdtemp(prefix="fimh-")) / f"http-{time.monotonic_ns()}.log"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "fim_server.cli", "http", "--port", "0", *args],
                                         stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout] + [self.lines.put("")],
                         daemon=True).start()
        self.url = self._line("listening ")
        if ready:
            self._line("ready ")

    def _line(self, start: str) -> str:
        end = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith(start):
                return line[len(start):].strip()
            if not line:
                break
        self.proc.kill()
        raise AssertionError(f"no {start!r} line; log:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="module")
def http(worker, sock_dir):
    server = HttpProcess("--connect", worker.address, "--no-spawn", "--max-tokens", "700", log_dir=sock_dir)
    yield server.url
    assert server.stop() == 0, server.log.read_text()[-3000:]


def worker_text(worker, prefix: str, suffix: str, max_tokens: int = 8, **options) -> str:
    with SyncWorkerClient(worker.address) as client:
        return client.infill(prefix, suffix, max_tokens=max_tokens, options={**EXACT, **options},
                             deadline_s=30).text


async def aworker_text(worker, prefix: str, suffix: str, max_tokens: int = 8, **options) -> str:
    """The worker's middle for the same input, asked directly (WorkerClient)."""
    options = {**EXACT, **options}
    async with WorkerClient(worker.address) as client:
        reply = await client.infill(prefix, suffix, max_tokens=options.pop("max_tokens", max_tokens),
                                    options=options, deadline_s=60)
        return reply.text


async def post(session: aiohttp.ClientSession, url: str, body, **kw) -> tuple[int, bytes]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with session.post(url, data=data, **kw) as r:
        return r.status, await r.read()


async def stats(session: aiohttp.ClientSession, base: str) -> dict:
    async with session.get(f"{base}/fim/stats") as r:
        assert r.status == 200
        return await r.json()


async def wait_stats(session, base: str, predicate, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = await stats(session, base)
        if predicate(s):
            return s
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached: {s}")


# ---------------------------------------------------------------- the clients' SDKs


def test_openai_sdk_gets_the_workers_middle_plain_and_streamed(http, worker):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{http}/v1", api_key="unused")
    expected = worker_text(worker, PREFIX, SUFFIX)
    plain = client.completions.create(model="fim", prompt=PREFIX, suffix=SUFFIX, max_tokens=8, extra_body=EXACT)
    assert plain.choices[0].text == expected
    assert plain.choices[0].finish_reason in ("stop", "length") and plain.object == "text_completion"
    assert plain.usage.completion_tokens > 0
    chunks = list(client.completions.create(model="fim", prompt=PREFIX, suffix=SUFFIX, max_tokens=8,
                                            stream=True, extra_body=EXACT))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # Mistral's path and shape: message / delta next to text
    fim = openai.OpenAI(base_url=f"{http}/v1/fim", api_key="unused").completions.create(
        model="codestral", prompt=PREFIX, suffix=SUFFIX, max_tokens=8, extra_body=EXACT)
    assert fim.choices[0].text == expected and fim.choices[0].message["content"] == expected


@pytest.mark.parametrize("template", [
    "<|fim_prefix|>{p}<|fim_suffix|>{s}<|fim_middle|>",
    "<fim_prefix>{p}<fim_suffix>{s}<fim_middle>",
    "<PRE> {p} <SUF>{s} <MID>",
    "<｜fim▁begin｜>{p}<｜fim▁hole｜>{s}<｜fim▁end｜>",
    "[SUFFIX]{s}[PREFIX]{p}",
])
def test_a_prompt_with_fim_tokens_and_no_suffix_is_split(template):
    split = split_prompt(template.format(p=PREFIX, s=SUFFIX))
    assert (split.prefix, split.suffix) == (PREFIX, SUFFIX)


def test_fim_token_split_keeps_leading_files_and_a_begun_middle():
    split = split_prompt(f"<|repo_name|>r\n<|file_sep|>a.py\nX = 1\n<|file_sep|>b.py\n"
                         f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>a")
    assert (split.prefix, split.suffix) == (PREFIX + "a", SUFFIX)
    assert "X = 1" in split.extra and "<|" not in split.extra
    assert split_prompt("def f(): pass") is None


def test_templated_prompt_through_http_equals_the_split_request(http, worker):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{http}/v1", api_key="unused")
    prompt = f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
    answer = client.completions.create(model="starcoder", prompt=prompt, max_tokens=8, extra_body=EXACT)
    assert answer.choices[0].text == worker_text(worker, PREFIX, SUFFIX)


def test_ollama_sdk_generates_with_suffix_and_sees_a_fim_template(http, worker):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=http)
    expected = worker_text(worker, PREFIX, SUFFIX)
    options = {"num_predict": 8, **EXACT}
    plain = client.generate(model="fim", prompt=PREFIX, suffix=SUFFIX, options=options)
    assert plain.response == expected and plain.done and plain.eval_count > 0
    parts = list(client.generate(model="fim", prompt=PREFIX, suffix=SUFFIX, options=options, stream=True))
    assert "".join(p.response or "" for p in parts) == expected and parts[-1].done
    assert ".Suffix" in client.show("fim").template
    assert [m.model for m in client.list().models]


# ---------------------------------------------------------------- llama.cpp and Tabby


async def test_infill_answers_llama_cpp_shapes_in_compact_json(http, worker):
    body = {"input_prefix": "def add(a, b):\n", "input_suffix": SUFFIX, "prompt": "    return ",
            "input_extra": [{"text": "X = 1\n", "filename": "x.py", "time": [1, 2]}], "n_predict": 8,
            "t_max_predict_ms": 250, "cache_prompt": False, "samplers": ["top_k"], "top_k": 40, "id_slot": 0,
            "length": "fixed"}
    async with aiohttp.ClientSession() as s:
        status, raw = await post(s, f"{http}/infill", body)
        assert status == 200 and raw.startswith(b'{') and b'"content":"' in raw and b"\n" not in raw
        full = json.loads(raw)
        assert full["content"] == await aworker_text(worker, "X = 1\n" + PREFIX, SUFFIX)
        assert full["timings"]["predicted_n"] > 0 and full["stop"] is True and "generation_settings" in full
        fields = ["content", "timings/prompt_n", "timings/predicted_ms", "truncated", "tokens_cached", "no/such"]
        status, raw = await post(s, f"{http}/infill", {**body, "response_fields": fields})
        picked = json.loads(raw)
        assert set(picked) == set(fields) - {"no/such"} and picked["content"] == full["content"]
        status, raw = await post(s, f"{http}/infill", {**body, "n_cmpl": 2})
        assert [a["index"] for a in json.loads(raw)] == [0, 1]
        # llama.vim's ring-buffer warm-up: n_predict 0 is answered without asking the worker
        before = (await stats(s, http))["worker"]["served"]
        status, raw = await post(s, f"{http}/infill", {"input_prefix": "", "input_suffix": "", "prompt": "",
                                                       "input_extra": [{"text": "a\n"}], "n_predict": 0,
                                                       "response_fields": [""]})
        assert (status, raw) == (200, b"{}")
        assert (await stats(s, http))["worker"]["served"] == before
        async with s.get(f"{http}/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_tabby_completion_health_and_events(http, worker):
    body = {"language": "python", "segments": {"prefix": PREFIX, "suffix": SUFFIX, "filepath": "a.py",
                                               "declarations": [{"filepath": "b.py", "body": "X = 1"}]},
            "max_tokens": 8, **EXACT}
    async with aiohttp.ClientSession() as s:
        status, raw = await post(s, f"{http}/v1/completions", body)
        reply = json.loads(raw)
        assert status == 200 and reply["id"] and reply["choices"][0]["index"] == 0
        assert reply["choices"][0]["text"] == await aworker_text(worker, "X = 1\n" + PREFIX, SUFFIX)
        async with s.get(f"{http}/v1/health") as r:
            health = await r.json()
            assert r.status == 200 and health["model"] and health["version"]["git_describe"]
        status, _ = await post(s, f"{http}/v1/events?select_kind=line", {"type": "view", "completion_id": "x"})
        assert status == 200


# ---------------------------------------------------------------- cancellation, latest-wins, joining


async def test_a_client_that_disconnects_cancels_its_worker_request(http):
    async with aiohttp.ClientSession() as s:
        before = await stats(s, http)
        body = {"prompt": PREFIX, "suffix": SUFFIX, **SLOW}
        task = asyncio.ensure_future(post(s, f"{http}/v1/completions", body))
        await wait_stats(s, http, lambda st: st["worker"]["running"] >= 1 or st["worker"]["queue_depth"] >= 1)
        task.cancel()                                   # the client goes away mid-request
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await wait_stats(s, http, lambda st: st["worker"]["cancelled"] > before["worker"]["cancelled"])
        assert after["http"]["disconnected"] == before["http"]["disconnected"] + 1
        assert after["http"]["in_flight"] == 0
        # and the server keeps serving
        status, _ = await post(s, f"{http}/v1/completions", {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 4})
        assert status == 200


async def test_the_newest_request_of_a_client_wins(http):
    headers = {"User-Agent": "editor-latest-wins"}
    async with aiohttp.ClientSession(headers=headers) as s:
        before = await stats(s, http)
        old = asyncio.ensure_future(post(s, f"{http}/v1/completions", {"prompt": PREFIX, "suffix": SUFFIX, **SLOW}))
        await wait_stats(s, http, lambda st: st["worker"]["running"] >= 1 or st["worker"]["queue_depth"] >= 1)
        newer = {"prompt": PREFIX + "a", "suffix": SUFFIX, "max_tokens": 4}
        status, raw = await post(s, f"{http}/v1/completions", newer)
        assert status == 200
        status, raw = await old                         # answered, with nothing
        assert status == 200 and json.loads(raw)["choices"][0]["text"] == ""
        after = await wait_stats(s, http, lambda st: st["worker"]["cancelled"] > before["worker"]["cancelled"])
        assert after["http"]["superseded"] == before["http"]["superseded"] + 1


async def test_identical_concurrent_requests_share_one_computation(http):
    body = {"prompt": PREFIX, "suffix": SUFFIX, **MEDIUM}
    async with aiohttp.ClientSession() as s, aiohttp.ClientSession(headers={"User-Agent": "blocker"}) as other:
        before = await stats(s, http)
        # another client's SLOW request holds the worker, so the first of the three stays queued
        blocker = asyncio.ensure_future(post(other, f"{http}/v1/completions", {"prompt": "x", "suffix": "", **SLOW}))
        await wait_stats(s, http, lambda st: st["worker"]["running"] >= 1)
        first = asyncio.ensure_future(post(s, f"{http}/v1/completions", body))
        await wait_stats(s, http, lambda st: st["http"]["in_flight"] >= 2)
        leaving = asyncio.ensure_future(post(s, f"{http}/v1/completions", body))
        staying = asyncio.ensure_future(post(s, f"{http}/v1/completions", body))
        await wait_stats(s, http, lambda st: st["http"]["joined"] >= before["http"]["joined"] + 2)
        leaving.cancel()                               # one of three leaves: the computation goes on
        blocker.cancel()
        answers = await asyncio.gather(first, staying)
        after = await wait_stats(s, http, lambda st: st["worker"]["cancelled"] > before["worker"]["cancelled"])
    texts = {json.loads(raw)["choices"][0]["text"] for _, raw in answers}
    assert [status for status, _ in answers] == [200, 200] and len(texts) == 1
    assert after["http"]["computed"] == before["http"]["computed"] + 2          # the blocker and the three
    assert after["worker"]["computed"] == before["worker"]["computed"] + 1      # the blocker was cancelled
    assert after["worker"]["cancelled"] == before["worker"]["cancelled"] + 1


async def test_a_shared_computation_outlives_the_newer_request_of_one_of_its_clients(http, worker):
    """A and B wait on one computation sent under A's document key; A's newer request supersedes
    it in the worker, and the front-end asks again for B, who gets the middle."""
    body = {"prompt": PREFIX, "suffix": SUFFIX, **MEDIUM, **EXACT}
    async with aiohttp.ClientSession(headers={"User-Agent": "editor-a"}) as a, \
            aiohttp.ClientSession(headers={"User-Agent": "editor-b"}) as b, \
            aiohttp.ClientSession(headers={"User-Agent": "blocker"}) as other:
        before = await stats(a, http)
        blocker = asyncio.ensure_future(post(other, f"{http}/v1/completions", {"prompt": "y", "suffix": "", **SLOW}))
        await wait_stats(a, http, lambda st: st["worker"]["running"] >= 1)
        from_a = asyncio.ensure_future(post(a, f"{http}/v1/completions", body))
        await wait_stats(a, http, lambda st: st["http"]["in_flight"] >= 2)
        from_b = asyncio.ensure_future(post(b, f"{http}/v1/completions", body))
        await wait_stats(a, http, lambda st: st["http"]["joined"] >= before["http"]["joined"] + 1)
        newer = asyncio.ensure_future(post(a, f"{http}/v1/completions",
                                           {"prompt": PREFIX + "b", "suffix": SUFFIX, "max_tokens": 4}))
        status, raw = await from_a                       # A's older request: superseded, empty
        assert status == 200 and json.loads(raw)["choices"][0]["text"] == ""
        # the worker answers the shared computation `superseded` (A's key): asked again for B
        await wait_stats(a, http, lambda st: st["worker"]["cancelled"] > before["worker"]["cancelled"])
        blocker.cancel()
        assert (await newer)[0] == 200
        status, raw = await from_b
    text = json.loads(raw)["choices"][0]["text"]
    assert status == 200 and text
    assert text == await aworker_text(worker, PREFIX, SUFFIX, **MEDIUM)


# ---------------------------------------------------------------- hostile input


HOSTILE = [
    ("/infill", b"not json"),
    ("/infill", b"[1, 2]"),
    ("/infill", b""),
    ("/infill", b'{"input_prefix": 1, "input_suffix": ""}'),
    ("/infill", b'{"input_suffix": ""}'),
    ("/infill", b'{"input_prefix": "", "input_suffix": "", "input_extra": [7]}'),
    ("/infill", b'{"input_prefix": "", "input_suffix": "", "n_predict": "many"}'),
    ("/infill", b'{"input_prefix": "", "input_suffix": "", "n_predict": 1e400}'),
    ("/infill", b'{"input_prefix": "", "input_suffix": "", "temperature": NaN}'),
    ("/infill", b'{"input_prefix": "", "input_suffix": "", "response_fields": [1]}'),
    ("/v1/completions", b'{"prompt": "x", "threshold": 2}'),
    ("/v1/completions", b'{"prompt": "x", "cache": "sometimes"}'),
    ("/v1/completions", b'{"prompt": "x", "stream": "yes"}'),
    ("/v1/completions", b'{"prompt": "x", "stop": [1]}'),
    ("/v1/completions", b'{"prompt": ["a", "b"]}'),
    ("/v1/completions", b'{"suffix": "x"}'),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": -3}'),
    ("/v1/completions", b'{"prompt": "x", "n": 0}'),
    ("/v1/completions", b'{"segments": "prefix"}'),
    ("/v1/completions", b'{"segments": {"prefix": ["x"]}}'),
    ("/v1/completions", b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}"),
    ("/v1/completions", b"[" * 100_000 + b"]" * 100_000),
    ("/v1/completions", b"\xff\xfe{}"),
    ("/api/generate", b'{"prompt": "x", "options": {"num_predict": "x"}}'),
    ("/api/generate", b'{"prompt": "x", "options": []}'),
    ("/api/show", b"{"),
]


async def test_hostile_bodies_get_a_4xx_with_a_message_and_the_server_keeps_serving(http):
    async with aiohttp.ClientSession() as s:
        for path, body in HOSTILE:
            async with s.post(f"{http}{path}", data=body) as r:
                reply = json.loads(await r.read())
                assert 400 <= r.status < 500, (path, body[:80], r.status, reply)
                message = reply["error"] if path.startswith("/api/") else reply["error"]["message"]
                assert isinstance(message, str) and message, (path, body[:80])
        async with s.post(f"{http}/v1/completions", data=b"x" * (9 * 1024 * 1024)) as r:
            assert r.status == 413 and "limit" in (await r.json())["error"]["message"]
        async with s.get(f"{http}/no/such/path") as r:
            assert r.status == 404
        # unknown fields are ignored, a lone surrogate is replaced, and completions still come
        status, raw = await post(s, f"{http}/v1/completions",
                                 b'{"prompt": "x = \\ud800", "suffix": "", "max_tokens": 2, "frobnicate": {"a": 1}}')
        assert status == 200 and json.loads(raw)["choices"][0]["finish_reason"] in ("stop", "length")


# ---------------------------------------------------------------- starting, auth, no worker


def test_a_non_loopback_bind_without_a_key_refuses_to_start():
    env = {k: v for k, v in os.environ.items() if k != "FIM_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "fim_server.cli", "http", "--host", "0.0.0.0", "--no-spawn"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 2 and "API key" in done.stderr


async def test_no_worker_answers_503_at_once_and_health_says_so(sock_dir):
    server = HttpProcess("--connect", f"ipc://{sock_dir}/nobody.sock", "--no-spawn", "--timeout", "600", ready=False)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{server.url}/health") as r:
                assert r.status == 503
            status, raw = await post(s, f"{server.url}/infill", {"input_prefix": "a", "input_suffix": ""})
            assert status == 503 and "no worker" in json.loads(raw)["error"]["message"]
    finally:
        assert server.stop() == 0


async def test_it_starts_its_own_worker_and_an_api_key_guards_it(tiny_model, sock_dir):
    server = HttpProcess("--connect", f"ipc://{sock_dir}/own.sock", "--model", str(tiny_model), "--threads", "1",
                         "--api-key", "s3cret", log_dir=sock_dir)
    try:
        async with aiohttp.ClientSession() as s:
            body = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 4}
            status, raw = await post(s, f"{server.url}/v1/completions", body)
            assert status == 401 and "API key" in json.loads(raw)["error"]["message"]
            status, _ = await post(s, f"{server.url}/v1/completions", body, headers={"Authorization": "Bearer nope"})
            assert status == 401
            status, raw = await post(s, f"{server.url}/v1/completions", body,
                                     headers={"Authorization": "Bearer s3cret"})
            assert status == 200 and "choices" in json.loads(raw)
            async with s.get(f"{server.url}/health") as r:      # probes need no key, as llama.cpp's
                assert r.status == 200
            async with s.get(f"{server.url}/fim/stats", headers={"Authorization": "Bearer s3cret"}) as r:
                assert (await r.json())["worker"]["bind"] == f"ipc://{sock_dir}/own.sock"
    finally:
        assert server.stop() == 0
    async with WorkerClient(f"ipc://{sock_dir}/own.sock") as client:    # its worker left with it
        with pytest.raises(WorkerUnavailable):
            await client.stats(deadline_s=1.0)


# ---------------------------------------------------------------- pieces


def test_post_filters_stop_strings_and_llama_cpp_indentation():
    job = FimJob("", "", Decoding(), 1.0, stop=("\n\n",), n_indent=4)
    assert post_filter("x = 1\n\ny = 2", job) == ("x = 1", "\n\n")
    assert post_filter("if a:\n        b\n    c\nd", job) == ("if a:\n        b\n    c", "")


def test_extra_context_keeps_the_newest_chunks_that_fit():
    assert with_extra("P", ["old\n", "mid\n", "new\n"], limit=8) == "mid\nnew\nP"
    assert with_extra("P", ["x" * 100], limit=8) == "P"


def test_the_http_package_imports_without_torch():
    modules = sorted(f"fim_server.http.{p.stem}" for p in (ROOT / "fim_server" / "http").glob("*.py")
                     if p.stem != "__init__")
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'transformers'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {modules!r}:\n"
            "    __import__(m)\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
