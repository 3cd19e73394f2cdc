"""The Node.js kernel (kernel/node/kernel.js) over a real socket pair, without a jail.

The kernel runs as a plain child process in a temporary working directory; the tests speak
docs/protocol.md to it through ``sessionpool.protocol``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sessionpool
from sessionpool import protocol

NODE = shutil.which("node")
KERNEL_JS = Path(sessionpool.__file__).parent / "kernel" / "node" / "kernel.js"

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not on PATH: the JavaScript kernel needs Node.js 20"
)


class Kernel:
    """One kernel process and the host end of its socket."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        assert NODE is not None
        self.sock, theirs = socket.socketpair()
        self.sock.settimeout(10)  # a hung kernel fails the test instead of hanging it
        with theirs:
            self.proc = subprocess.Popen(
                [NODE, str(KERNEL_JS), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                cwd=cwd,
                env=env,
            )
        self.ready, _ = protocol.recv_message(self.sock)
        self._ids = 0

    def send(self, header: dict[str, Any]) -> int:
        self._ids += 1
        protocol.send_message(self.sock, {"id": self._ids, **header})
        return self._ids

    def recv(self) -> dict[str, Any]:
        header, _ = protocol.recv_message(self.sock)
        return header

    def reply(self, rid: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The chunks, then the reply, of request ``rid``."""
        chunks = []
        while True:
            header = self.recv()
            assert header["id"] == rid
            if header["op"] != "chunk":
                return chunks, header
            chunks.append(header)

    def execute(self, code: str, output_limit: int = 1 << 20, **fields: Any) -> dict[str, Any]:
        rid = self.send(
            {
                "op": "execute",
                "code": code,
                "output_limit": output_limit,
                "image_limit": 1 << 20,
                "max_images": 4,
                **fields,
            }
        )
        chunks, reply = self.reply(rid)
        assert chunks == []
        return reply

    def value(self, code: str) -> str | None:
        """The text of the cell's result, failing on an error."""
        reply = self.execute(code)
        assert reply["status"] == "ok", reply["error"]
        return None if reply["result"] is None else reply["result"]["text/plain"]

    def interrupt(self) -> None:
        os.kill(self.proc.pid, signal.SIGINT)

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(tmp_path)
    yield k
    k.close()


def test_ready_names_the_process(kernel: Kernel) -> None:
    assert kernel.ready == {"op": "ready", "pid": kernel.proc.pid, "uid": os.getuid()}


def test_declarations_persist_across_cells(kernel: Kernel) -> None:
    kernel.execute("let a = 1; const b = 2; var c = 3")
    kernel.execute(
        "function sum() { return a + b + c }\nclass Box { constructor(v) { this.v = v } }"
    )
    assert kernel.value("a = 10; sum()") == "15"
    assert kernel.value("new Box(sum()).v") == "15"
    reply = kernel.execute("let a = 5")
    assert reply["status"] == "error"
    assert reply["error"]["ename"] == "SyntaxError"  # as in Node's REPL


def test_a_named_context_is_refused_not_run_in_the_default_one(kernel: Kernel) -> None:
    reply = kernel.execute("globalThis.leak = 1", context="a")
    assert reply["status"] == "error" and "not supported" in reply["error"]["evalue"]
    assert kernel.value("typeof leak") == "'undefined'"


def test_last_expression_is_the_result(kernel: Kernel) -> None:
    assert kernel.value("const xs = [1, 2, 3];\nxs.map((x) => x * 2)") == "[ 2, 4, 6 ]"
    assert kernel.value("'text'") == "'text'"
    assert kernel.value("{a: 1}") == "{ a: 1 }"  # an object, not a block
    assert kernel.value("let unused = 1") is None
    assert kernel.value("undefined") is None


def test_console_goes_to_stdout_and_stderr(kernel: Kernel) -> None:
    reply = kernel.execute(
        "console.log('a %d', 1, {k: 'v'}); console.error('b'); console.info('c');"
        " console.warn('d'); process.stdout.write('e'); process.stderr.write(Buffer.from('f'));"
        " undefined"
    )
    assert reply["status"] == "ok"
    assert reply["stdout"] == "a 1 { k: 'v' }\nc\ne"
    assert reply["stderr"] == "b\nd\nf"
    assert reply["truncated"] is False
    assert reply["result"] is None
    assert reply["displays"] == []
    assert reply["duration_ms"] >= 0


def test_console_never_colours(tmp_path: Path) -> None:
    k = Kernel(tmp_path, env={**os.environ, "FORCE_COLOR": "1"})
    try:
        assert k.execute("console.log({n: 1})")["stdout"] == "{ n: 1 }\n"
    finally:
        k.close()


def test_thrown_error_is_a_failure_with_a_traceback(kernel: Kernel) -> None:
    kernel.execute("let kept = 4")
    reply = kernel.execute("function inner() {\n  throw new RangeError('too far')\n}\ninner()")
    assert reply["status"] == "error"
    assert reply["result"] is None
    error = reply["error"]
    assert (error["ename"], error["evalue"]) == ("RangeError", "too far")
    assert "RangeError: too far" in error["traceback"]
    assert "at inner (<cell2>:2:9)" in error["traceback"]
    assert "kernel.js" not in error["traceback"]
    assert "node:vm" not in error["traceback"]
    assert "\x1b[" not in error["traceback"]
    assert kernel.value("kept") == "4"


def test_syntax_error_points_at_the_source(kernel: Kernel) -> None:
    error = kernel.execute("let x = ;")["error"]
    assert error["ename"] == "SyntaxError"
    assert "let x = ;\n        ^" in error["traceback"]


def test_thrown_non_error_values(kernel: Kernel) -> None:
    error = kernel.execute("throw 'plain string'")["error"]
    assert error == {
        "ename": "string",
        "evalue": "plain string",
        "traceback": "Uncaught 'plain string'",
    }
    error = kernel.execute("throw {code: 7}")["error"]
    assert (error["ename"], error["evalue"]) == ("Object", "{ code: 7 }")


def test_a_promise_result_is_awaited(kernel: Kernel) -> None:
    assert kernel.value("new Promise((r) => setTimeout(() => r(41 + 1), 5))") == "42"
    reply = kernel.execute("Promise.reject(new TypeError('no'))")
    assert reply["status"] == "error"
    assert (reply["error"]["ename"], reply["error"]["evalue"]) == ("TypeError", "no")


def test_top_level_await_keeps_declarations_global(kernel: Kernel) -> None:
    code = (
        "const {a, b: [c]} = await Promise.resolve({a: 1, b: [2]});\n"
        "function twice(v) { return 2 * v }\n"
        "class Pair { constructor() { this.sum = a + c } }\n"
        "await new Promise((r) => setTimeout(r, 5));\n"
        "twice(a + c)"
    )
    assert kernel.value(code) == "6"
    assert kernel.value("[a, c, twice(5), new Pair().sum]") == "[ 1, 2, 10, 3 ]"
    reply = kernel.execute("await Promise.reject(new Error('inside'))")
    assert (reply["status"], reply["error"]["evalue"]) == ("error", "inside")
    assert kernel.value("for await (const v of [Promise.resolve(1)]) console.log(v)") is None


def test_require_works_relative_to_the_working_directory(kernel: Kernel, tmp_path: Path) -> None:
    (tmp_path / "helper.js").write_text("module.exports = (x) => x + 1;\n")
    code = (
        "const fs = require('fs');\n"
        "fs.writeFileSync('note.txt', 'written by node');\n"
        "[fs.readFileSync('note.txt', 'utf8'), require('./helper.js')(1)]"
    )
    assert kernel.value(code) == "[ 'written by node', 2 ]"
    assert (tmp_path / "note.txt").read_text() == "written by node"


def test_output_is_capped_with_a_note(kernel: Kernel) -> None:
    reply = kernel.execute("console.log('x'.repeat(60)); console.error('y'.repeat(20))", 70)
    assert reply["stdout"] == "x" * 60 + "\n"
    assert reply["stderr"] == "y" * 9 + (
        "\n[output truncated: 12 more bytes were dropped; limit 70 bytes]\n"
    )
    assert reply["truncated"] is True
    reply = kernel.execute("console.log('é'.repeat(10))", 5)  # never half a character
    assert reply["stdout"] == "éé"


def test_streamed_chunks_add_up_to_the_reply(kernel: Kernel) -> None:
    rid = kernel.send(
        {
            "op": "execute",
            "code": "console.error('err'); for (let i = 0; i < 50; i++) console.log('line', i);"
            " process.stdout.write('tail'); 7",
            "output_limit": 300,
            "stream": True,
        }
    )
    chunks, reply = kernel.reply(rid)
    assert {c["name"] for c in chunks} == {"stdout", "stderr"}
    for name in ("stdout", "stderr"):
        assert (
            "".join(c["text"] for c in chunks if c["name"] == name)
            == reply[name].split("\n[output truncated")[0]
        )
    assert reply["stdout"].startswith("line 0\nline 1\n")
    assert reply["truncated"] is True
    assert reply["result"] == {"text/plain": "7"}


def test_streaming_is_live_during_a_synchronous_cell(kernel: Kernel, tmp_path: Path) -> None:
    # the cell spins until the test creates a file, after seeing the cell's first line
    code = (
        "const fs = require('fs'); console.log('waiting');\n"
        "const until = Date.now() + 5000;\n"
        "while (!fs.existsSync('go') && Date.now() < until) {}\n"
        "console.log(fs.existsSync('go') ? 'went' : 'gave up')"
    )
    rid = kernel.send({"op": "execute", "code": code, "output_limit": 1000, "stream": True})
    assert kernel.recv() == {"op": "chunk", "id": rid, "name": "stdout", "text": "waiting\n"}
    (tmp_path / "go").touch()
    chunks, reply = kernel.reply(rid)
    assert [c["text"] for c in chunks] == ["went\n"]
    assert reply["stdout"] == "waiting\nwent\n"


def _start_streaming(kernel: Kernel, code: str) -> int:
    """Send a streaming cell and return once its first line is out (the cell is running)."""
    rid = kernel.send({"op": "execute", "code": code, "output_limit": 1000, "stream": True})
    assert kernel.recv()["text"] == "running\n"
    return rid


def test_sigint_interrupts_a_busy_loop_and_keeps_state(kernel: Kernel) -> None:
    kernel.execute("let before = 'kept'")
    rid = _start_streaming(kernel, "let during = 1; console.log('running'); while (true) {}")
    kernel.interrupt()
    _, reply = kernel.reply(rid)
    assert reply["status"] == "error"
    assert reply["interrupted"] is True
    assert "interrupted" in reply["error"]["evalue"]
    assert kernel.value("[before, during]") == "[ 'kept', 1 ]"


def test_sigint_interrupts_waiting_for_a_promise(kernel: Kernel) -> None:
    rid = _start_streaming(kernel, "console.log('running'); await new Promise(() => {})")
    kernel.interrupt()
    _, reply = kernel.reply(rid)
    assert (reply["status"], reply["interrupted"]) == ("error", True)
    assert kernel.value("1 + 1") == "2"


def test_sigint_between_requests_is_ignored(kernel: Kernel) -> None:
    kernel.execute("var still = 'here'")
    kernel.interrupt()
    rid = kernel.send({"op": "ping"})
    assert kernel.reply(rid)[1] == {"op": "pong", "id": rid}
    assert kernel.value("still") == "'here'"
    assert kernel.proc.poll() is None


def test_late_errors_of_callbacks_do_not_kill_the_kernel(kernel: Kernel, tmp_path: Path) -> None:
    reply = kernel.execute(
        "setTimeout(() => { throw new Error('in a timer') }, 1);\n"
        "Promise.reject(new Error('unhandled'));\n"
        "await new Promise((r) => setTimeout(r, 20)); 'done'"
    )
    assert reply["status"] == "ok"
    assert reply["result"] == {"text/plain": "'done'"}
    assert "Uncaught Error: in a timer" in reply["stderr"]
    assert "Uncaught (in promise) Error: unhandled" in reply["stderr"]
    # after its cell: output and errors are dropped, and the kernel lives on
    kernel.execute(
        "setTimeout(() => { console.log('late'); require('fs').writeFileSync('fired', '');"
        " throw new Error('late') }, 1)"
    )
    while not (tmp_path / "fired").exists():
        time.sleep(0.005)
    reply = kernel.execute("'next'")
    assert (reply["stdout"], reply["stderr"], reply["status"]) == ("", "", "ok")


def test_shell_reports_exit_code_and_output(kernel: Kernel, tmp_path: Path) -> None:
    (tmp_path / "here.txt").touch()
    rid = kernel.send({"op": "shell", "command": "ls; echo oops >&2; exit 3", "output_limit": 1000})
    _, reply = kernel.reply(rid)
    assert reply["op"] == "shell_result"
    assert (reply["exit_code"], reply["stdout"], reply["stderr"]) == (3, "here.txt\n", "oops\n")
    assert (reply["truncated"], reply["interrupted"]) == (False, False)
    rid = kernel.send({"op": "shell", "command": "kill -TERM $$", "output_limit": 1000})
    assert kernel.reply(rid)[1]["exit_code"] == 128 + signal.SIGTERM


def test_shell_output_is_capped(kernel: Kernel) -> None:
    rid = kernel.send({"op": "shell", "command": "printf '%050d'", "output_limit": 20})
    reply = kernel.reply(rid)[1]
    assert reply["stdout"] == "0" * 20
    assert reply["truncated"] is True
    assert "30 more bytes were dropped" in reply["stderr"]


def test_sigint_kills_a_shell_command(kernel: Kernel, tmp_path: Path) -> None:
    command = "echo partial; touch started; exec sleep 30"
    rid = kernel.send({"op": "shell", "command": command, "output_limit": 100})
    while not (tmp_path / "started").exists():
        time.sleep(0.005)
    kernel.interrupt()
    reply = kernel.reply(rid)[1]
    assert (reply["interrupted"], reply["stdout"]) == (True, "partial\n")
    assert reply["exit_code"] == 128 + signal.SIGKILL
    assert kernel.value("'alive'") == "'alive'"


def test_ping_and_bad_requests(kernel: Kernel) -> None:
    rid = kernel.send({"op": "ping"})
    assert kernel.reply(rid)[1] == {"op": "pong", "id": rid}
    rid = kernel.send({"op": "frobnicate"})
    reply = kernel.reply(rid)[1]
    assert (reply["op"], reply["id"]) == ("bad-request", rid)
    assert "frobnicate" in reply["detail"]
    rid = kernel.send({"op": "execute", "code": 42})
    assert kernel.reply(rid)[1]["op"] == "bad-request"
    # the process service is the Python kernel's: this one says so, by id (the session then
    # reports processes as not supported by the pool's runtime)
    rid = kernel.send({"op": "proc_start", "cmd": "/bin/true"})
    assert kernel.reply(rid)[1]["op"] == "bad-request"


def test_exit_request_ends_the_process(kernel: Kernel) -> None:
    kernel.send({"op": "exit"})
    assert kernel.proc.wait(timeout=5) == 0


def test_eof_ends_the_process(kernel: Kernel) -> None:
    kernel.execute("let x = 1")
    kernel.sock.shutdown(socket.SHUT_WR)
    assert kernel.proc.wait(timeout=5) == 0
