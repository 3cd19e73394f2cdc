"""Runs a corpus of cells through one SessionShell and records everything they did.

A subprocess, because IPython's InteractiveShell is a process-wide singleton: the fast-path
shell and the IPython-only shell each get a process of their own, built as the zygote builds
its shell (matplotlib enabled, warmed up). Usage: ``python shell_driver.py fast|ipython OUT``
with the corpus (a JSON list of cells) on stdin; the record is written to OUT as JSON (stdout
is left to what cells write to the real descriptors, such as ``!echo``).
"""

from __future__ import annotations

import base64
import json
import linecache
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from sessionpool.kernel.shell import SessionShell

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_DURATION = re.compile(r"[\d.]+(?:e[+-]?\d+)? ?(?:ns|\u00b5s|\u03bcs|us|ms|s)\b")
_SIMPLE = (int, float, str, bool, type(None), list, tuple, dict)


def normalise(text: str) -> str:
    """Object addresses and timings differ between any two processes, fast path or not."""
    return _DURATION.sub("<time>", _ADDRESS.sub("0x?", text))


def namespace(ns: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in ns.items():
        if key in ("__builtins__", "get_ipython", "exit", "quit", "open"):
            out[key] = type(value).__name__
        elif isinstance(value, _SIMPLE):
            out[key] = normalise(repr(value))[:300]
        else:
            out[key] = type(value).__name__
    return out


def execution_result(result: Any) -> dict[str, Any] | None:
    """What IPython's ExecutionResult of the last cell says (the fast path builds its own)."""
    if result is None:
        return None
    return {
        "execution_count": result.execution_count,
        "success": result.success,
        "error_before_exec": type(result.error_before_exec).__name__,
        "error_in_exec": type(result.error_in_exec).__name__,
        "result": type(result.result).__name__,
        "raw_cell": result.info.raw_cell,
        "store_history": result.info.store_history,
    }


def history_state(ip: Any) -> dict[str, Any]:
    """Everything a cell counted in the history leaves behind."""
    history = ip.history_manager
    return {
        "execution_count": ip.execution_count,
        "ns": namespace(ip.user_ns),
        "hidden": sorted(ip.user_ns_hidden),
        "inputs": [list(history.input_hist_parsed), list(history.input_hist_raw)],
        "aliases": [history._i00, history._i, history._ii, history._iii],
        "outputs": [sorted(history.output_hist), sorted(history.output_hist_reprs)],
        "exceptions": sorted(history.exceptions),
        "cell_names": sorted(ip.compile._filename_map),
        "linecache": sorted(n for n in linecache.cache if n.startswith("<ipython-input-")),
    }


def chunks_sink(chunks: list[list[str]]) -> Callable[[str, str], None]:
    def sink(name: str, text: str) -> None:
        chunks.append([name, text])

    return sink


VALUES: list[Any] = [
    0,
    -5,
    2**100,
    1.5,
    1e300,
    float("nan"),
    3j,
    True,
    "str",
    "x" * 5000,
    b"bytes",
    [1, "a", None],
    (1,),
    {"a": [1, 2]},
    {1, 2},
    frozenset(),
    range(3),
    [[1] * 200] * 3,
]


def formats(path: str) -> None:
    """The displayhook's text/plain shortcut against ``DisplayFormatter.format``, as printers
    are registered and formatters disabled: (scenario, value, same answer, shortcut taken)."""
    shell = SessionShell()
    hook, display = shell.shell.displayhook, shell.shell.display_formatter
    records = []

    def check(scenario: str) -> None:
        for value in VALUES:
            before = hook.quick_results
            same = hook.compute_format_data(value) == display.format(value)
            records.append([scenario, repr(value)[:40], same, hook.quick_results > before])

    display.format(0)  # as warm_up does: a formatter's traits exist once it has been asked
    check("defaults")
    shell.shell.run_line_magic("precision", "2")
    check("precision")
    html = display.formatters["text/html"]
    html.for_type(int, lambda v: f"<b>{v}</b>")
    check("html for int")
    html.pop(int)
    display.formatters["text/latex"].for_type_by_name("builtins", "float", lambda v: "$f$")
    check("latex for float, deferred")
    display.formatters["text/latex"].pop(float)
    markdown = display.formatters["text/markdown"]
    markdown.singleton_printers[id(VALUES[0])] = lambda v: "*zero*"
    check("markdown for 0 only")
    markdown.singleton_printers.pop(id(VALUES[0]))
    json_formatter = display.formatters["application/json"]
    json_formatter.for_type(object, lambda v: {"any": True})
    check("json for object")
    json_formatter.enabled = False
    check("json for object, disabled")
    json_formatter.enabled = True
    json_formatter.pop(object)
    display.mimebundle_formatter.for_type(list, lambda v: ({"text/html": "<ul/>"}, {}))
    check("mimebundle for list")
    display.mimebundle_formatter.pop(list)
    display.formatters["text/plain"].enabled = False
    check("plain text disabled")
    with open(path, "w") as f:
        json.dump(records, f)


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "formats":
        formats(path)
        return
    cells = json.load(sys.stdin)
    shell = SessionShell(fast_path=mode == "fast")
    shell.enable_matplotlib()
    counted: list[bool] = []

    def note(result: Any) -> None:
        counted.append(result.info.store_history)

    shell.shell.events.register("post_run_cell", note)
    before = history_state(shell.shell)
    shell.warm_up()
    after = history_state(shell.shell)
    shell.shell.events.unregister("post_run_cell", note)
    with open(path + ".warm_up", "w") as f:
        json.dump({"before": before, "after": after, "counted": counted}, f)

    def on_sigint(signum: int, frame: Any) -> None:  # the kernel's deadline interrupt
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    ip = shell.shell
    records = []
    for spec in cells:
        chunks: list[list[str]] = []
        plain = shell.plain
        record: dict[str, Any] = {"code": spec["code"]}
        if plain is not None:
            # the text proof against the real thing, before the cell changes any state
            proved = plain.transformed(spec["code"])
            if proved is not None:
                record["transform_cell_agrees"] = ip.transform_cell(spec["code"]) == proved
        taken = plain.taken if plain is not None else 0
        header, blobs = shell.run(
            spec["code"],
            output_limit=spec.get("output_limit", 1 << 20),
            image_limit=1 << 24,
            max_images=32,
            store_history=spec.get("store_history", True),
            sink=chunks_sink(chunks) if spec.get("stream") else None,
            context=spec.get("context"),
        )
        header.pop("duration_ms")
        record.update(
            header=json.loads(normalise(json.dumps(header, ensure_ascii=False))),
            blobs=[base64.b64encode(b).decode() for b in blobs],
            chunks=chunks,
            fast=plain.taken - taken if plain is not None else None,
            execution_count=ip.execution_count,
            ns=namespace(ip.user_ns),
            hidden=sorted(ip.user_ns_hidden),
            history=list(ip.history_manager.input_hist_parsed[-3:]),
            raw_history=list(ip.history_manager.input_hist_raw[-3:]),
            succeeded=ip.last_execution_succeeded,
            result=execution_result(ip.last_execution_result),
            exceptions=sorted(ip.history_manager.exceptions),
            cell_names=sorted(ip.compile._filename_map),
            compiler=type(ip.compile).__name__,
            displayhook=type(sys.displayhook).__name__,
            excepthook=type(sys.excepthook).__name__,
            main=sys.modules["__main__"].__dict__ is ip.user_module.__dict__,
        )
        records.append(record)
    with open(path, "w") as f:
        json.dump(records, f)


if __name__ == "__main__":
    main()
