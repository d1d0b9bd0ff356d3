"""A hostile battery against the code sandbox: each program is contained with the right verdict, the host is
unaffected and no process is left behind. Runs for real: bubblewrap, rlimits, unprivileged uids, g++."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from distillery.schema.records import Query, Reference, make_query
from distillery.schema.records import TestCase as CodeTest
from distillery.verify.code import CodeVerifier
from distillery.verify.config import CodeSettings
from distillery.verify.sandbox import SandboxLimits, SandboxSettings, processes_of_uid

SECRET = "distillery-test-secret-5f2c"
SANDBOX = SandboxSettings(uid_base=62000, uid_count=8, lock_dir="/tmp/distillery-sandbox-uids-tests")
LIMITS = SandboxLimits(wall_s=6.0, cpu_s=2, memory_mb=512, sandbox_memory_mb=256, max_processes=16, max_file_mb=4, max_output_kb=256, tmpfs_mb=16)
COMPILE = SandboxLimits(wall_s=30.0, cpu_s=20, memory_mb=1024, max_processes=32, max_file_mb=64, max_output_kb=256, tmpfs_mb=128)


def _listener() -> tuple[socket.socket, list[str]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[str] = []

    def accept() -> None:
        server.settimeout(60)
        try:
            connection, address = server.accept()
        except OSError:
            return
        accepted.append(str(address))
        connection.close()

    threading.Thread(target=accept, daemon=True).start()
    return server, accepted


LISTENER, LISTENER_ACCEPTED = _listener()
PORT = LISTENER.getsockname()[1]
HOST_CANARY = Path("/tmp/distillery-hostile-canary.txt")

# (name, language, program, stdin, expected stdout, allowed verdicts)
PY = "python"
CPP = "cpp"
PROGRAMS: list[tuple[str, str, str, str, str, set[str]]] = [
    ("fork_bomb", PY, "import os\nwhile True:\n    os.fork()\n", "", "", {"runtime_error", "time_limit"}),
    ("fork_bomb_sleepers", PY, "import os, time\nfor _ in range(1000):\n    if os.fork() == 0:\n        time.sleep(1000)\n", "", "", {"runtime_error"}),
    ("memory_bomb", PY, "x = bytearray(4 * 1024**3)\n", "", "", {"memory_limit"}),
    ("memory_spread_children", PY, "import os, time\nfor _ in range(8):\n    if os.fork() == 0:\n        block = bytearray(64 << 20)\n        for i in range(0, len(block), 4096):\n            block[i:i + 8] = os.getpid().to_bytes(4, 'little') + i.to_bytes(4, 'little')\n        time.sleep(100)\nfor _ in range(8):\n    os.wait()\nprint('spread')\n", "", "", {"memory_limit"}),
    ("memory_growth", PY, "x = []\nwhile True:\n    x.append(' ' * 10**6)\n", "", "", {"memory_limit"}),
    ("infinite_loop", PY, "while True:\n    pass\n", "", "", {"time_limit"}),
    ("sleep_forever", PY, "import time\ntime.sleep(10**6)\n", "", "", {"time_limit"}),
    ("ignore_signals_loop", PY, "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n", "", "", {"time_limit"}),
    ("busy_threads", PY, "import threading\ndef spin():\n    while True:\n        pass\nfor _ in range(8):\n    threading.Thread(target=spin).start()\n", "", "", {"time_limit"}),
    ("thread_bomb", PY, "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n", "", "", {"runtime_error"}),
    ("network_loopback", PY, f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {PORT}), timeout=2)\n    print('connected')\nexcept OSError:\n    print('blocked')\n", "", "blocked", {"accepted"}),
    ("network_outside", PY, "import socket\ntry:\n    socket.create_connection(('8.8.8.8', 53), timeout=2)\n    print('connected')\nexcept OSError:\n    print('blocked')\n", "", "blocked", {"accepted"}),
    ("write_usr", PY, "open('/usr/distillery-evil', 'w').write('x')\n", "", "", {"runtime_error"}),
    ("write_program_dir", PY, "open('/sandbox/evil', 'w').write('x')\n", "", "", {"runtime_error"}),
    ("write_host_canary", PY, f"open('{HOST_CANARY}', 'w').write('pwned')\nprint('wrote')\n", "", "wrote", {"wrong_answer", "accepted"}),
    ("read_host_files", PY, "import os\nprint([os.path.exists(p) for p in ('/work', '/root', '/home', '/etc/passwd', '/etc/shadow', '/var')])\n", "", "[False, False, False, False, False, False]", {"accepted"}),
    ("env_secret", PY, "import os\nprint(os.environ.get('DISTILLERY_TEST_SECRET', 'none'))\n", "", "none", {"accepted"}),
    ("proc_environ_secret", PY, f"import glob\nfound = False\nfor p in glob.glob('/proc/*/environ'):\n    try:\n        found |= b'{SECRET}' in open(p, 'rb').read()\n    except OSError:\n        pass\nprint('found' if found else 'clean')\n", "", "clean", {"accepted"}),
    ("kill_parent", PY, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('alive')\n", "", "alive", {"accepted"}),
    ("kill_everything", PY, "import os, signal\nos.kill(-1, signal.SIGKILL)\n", "", "", {"runtime_error"}),
    ("kill_host_pid", PY, f"import os, signal\ntry:\n    os.kill({os.getpid()}, signal.SIGKILL)\n    print('killed')\nexcept OSError:\n    print('safe')\n", "", "safe", {"accepted"}),
    ("huge_stdout", PY, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", "", "", {"output_limit"}),
    ("huge_stderr", PY, "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n", "", "", {"output_limit"}),
    ("setsid_escape", PY, "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)\nprint('parent done')\n", "", "parent done", {"accepted"}),
    ("double_fork_daemon", PY, "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1000)\n    os._exit(0)\nprint('parent done')\n", "", "parent done", {"accepted"}),
    ("segfault_signal", PY, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "", "", {"runtime_error"}),
    ("deep_recursion", PY, "def f(n):\n    return f(n + 1)\nf(0)\n", "", "", {"runtime_error"}),
    ("deep_recursion_unlimited", PY, "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)\n", "", "", {"runtime_error", "memory_limit", "time_limit"}),
    ("fill_tmp", PY, "import os\nwith open('/tmp/fill', 'wb') as f:\n    for _ in range(10**4):\n        f.write(b'x' * 10**6)\n", "", "", {"runtime_error"}),
    ("chmod_system", PY, "import os\nos.chmod('/usr/bin/python3.11', 0o777)\n", "", "", {"runtime_error"}),
    ("mount_and_devices", PY, "import os, subprocess\nr = subprocess.run(['mount', '-t', 'tmpfs', 'none', '/tmp'], capture_output=True)\nprint('mounted' if r.returncode == 0 else 'blocked', os.path.exists('/dev/mem'), os.path.exists('/dev/sda'))\n", "", "blocked False False", {"accepted"}),
    ("stdin_echo_ok", PY, "print(int(input()) * 2)\n", "21\n", "42", {"accepted"}),
    ("cpp_infinite_loop", CPP, "int main(){ volatile unsigned long x = 0; while (true) { x++; } }\n", "", "", {"time_limit"}),
    ("cpp_memory_bomb", CPP, "#include <vector>\n#include <cstdio>\nint main(){ std::vector<char> v((size_t)8 << 30, 1); std::printf(\"%d\", v[5]); }\n", "", "", {"memory_limit"}),
    ("cpp_fork_bomb", CPP, "#include <unistd.h>\nint main(){ while (true) fork(); }\n", "", "", {"time_limit", "runtime_error"}),
    ("cpp_null_deref", CPP, "#include <cstdio>\nint main(){ int *p = nullptr; std::printf(\"%d\", *p); }\n", "", "", {"runtime_error"}),
    ("cpp_huge_output", CPP, "#include <cstdio>\nint main(){ while (true) std::puts(\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"); }\n", "", "", {"output_limit", "runtime_error"}),
    ("cpp_stack_overflow", CPP, "int f(int n){ volatile char pad[4096]; pad[0] = n; return f(n + 1) + pad[0]; }\nint main(){ return f(0); }\n", "", "", {"runtime_error"}),
    ("cpp_compile_error", CPP, "int main(){ return undefined_name; }\n", "", "", {"compile_error"}),
    ("cpp_include_host_file", CPP, "#include \"/work/main/setup.cfg\"\nint main(){}\n", "", "", {"compile_error"}),
    ("cpp_setsid_escape", CPP, "#include <unistd.h>\n#include <cstdio>\nint main(){ if (fork() == 0) { setsid(); sleep(1000); } std::puts(\"parent done\"); }\n", "", "parent done", {"accepted"}),
]


def _query(name: str, language: str, stdin: str, expected: str) -> Query:
    return make_query(
        "code",
        [{"role": "user", "content": f"hostile program {name}"}],
        Reference(language=language, tests=[CodeTest(input=stdin, output=expected)]),
    )


@pytest.fixture(scope="module")
def battery_verdicts() -> dict[str, tuple[set[str], dict]]:
    os.environ["DISTILLERY_TEST_SECRET"] = SECRET
    HOST_CANARY.unlink(missing_ok=True)
    settings = CodeSettings(parallelism=2, limits=LIMITS, compile_limits=COMPILE, sandbox=SANDBOX)
    verifier = CodeVerifier(settings, threshold=0.9)
    try:
        pairs = [(_query(name, language, stdin, expected), f"```{language}\n{code}```") for name, language, code, stdin, expected, _ in PROGRAMS]
        verdicts = verifier.verify_batch(pairs)
    finally:
        verifier.close()
    return {name: (allowed, verdict.details) for (name, *_, allowed), verdict in zip(PROGRAMS, verdicts)}


def test_battery_is_large_enough() -> None:
    assert len(PROGRAMS) >= 30
    assert sum(language == CPP for _, language, *_ in PROGRAMS) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("name", [program[0] for program in PROGRAMS])
def test_hostile_program_is_contained_with_the_right_verdict(name: str, battery_verdicts: dict[str, tuple[set[str], dict]]) -> None:
    allowed, details = battery_verdicts[name]
    verdict = details["verdicts"][0]
    assert verdict in allowed, f"{name}: got {verdict}, expected one of {sorted(allowed)}"


@pytest.mark.slow
def test_verdicts_say_which_whole_sandbox_memory_limit_was_in_force(battery_verdicts: dict[str, tuple[set[str], dict]]) -> None:
    _, details = battery_verdicts["memory_spread_children"]
    assert details["sandbox_memory_limit"].split(":")[0] in {"cgroup_v2", "cgroup_v1", "uid_watch"}
    assert "256 MiB" in details["sandbox_memory_limit"] and "memory budget" in details["first_failure"]
    assert all(details["sandbox_memory_limit"] for _, details in battery_verdicts.values() if details["verdicts"] != ["compile_error"])


@pytest.mark.slow
def test_no_process_left_behind_and_host_unaffected(battery_verdicts: dict[str, tuple[set[str], dict]]) -> None:
    leftovers = {uid: processes_of_uid(uid) for uid in range(SANDBOX.uid_base, SANDBOX.uid_base + SANDBOX.uid_count)}
    assert not any(leftovers.values()), f"sandbox processes survived: {leftovers}"
    assert not HOST_CANARY.exists(), "a sandboxed program wrote to the host's /tmp"
    assert not Path("/usr/distillery-evil").exists()
    assert LISTENER_ACCEPTED == [], "a sandboxed program reached a host loopback port"
    assert Path("/usr/bin/python3.11").stat().st_mode & 0o777 == 0o755
