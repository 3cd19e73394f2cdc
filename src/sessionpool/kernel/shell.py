"""The interpreter of one session: IPython's InteractiveShell with captured outputs.

Runs inside the sandbox. Imports only the standard library, IPython and (lazily) matplotlib:
never anything from the server.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import ctypes.util
import gc
import inspect
import io
import linecache
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from IPython.core.async_helpers import _pseudo_sync_runner
from IPython.core.autocall import IPyAutocall
from IPython.core.compilerop import CachingCompiler
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.formatters import (
    BaseFormatter,
    DisplayFormatter,
    IPythonDisplayFormatter,
    MimeBundleFormatter,
    PlainTextFormatter,
)
from IPython.core.history import HistoryManager
from IPython.core.interactiveshell import (
    ExecutionInfo,
    ExecutionResult,
    InteractiveShell,
    softspace,
)
from IPython.core.macro import Macro
from IPython.core.splitinput import split_user_input
from traitlets import Type

from sessionpool.protocol import WARMUP_CELL

try:  # an extension module of CPython's own; absent from some builds
    from _sha1 import sha1 as _sha1  # type: ignore[import-not-found]  # no stub
except ImportError:  # pragma: no cover - then hashlib's, as IPython does
    _sha1 = None

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _malloc_trim() -> None:
    """Hand freed heap pages back to the kernel so a session that plotted shrinks again."""
    _libc.malloc_trim(ctypes.c_size_t(0))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
TRUNCATION_NOTE = "\n[output truncated: {dropped} more bytes were dropped; limit {limit} bytes]\n"


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass
class CellOutput:
    """Everything one execution produced, bounded by the limits it was started with."""

    output_limit: int
    image_limit: int
    max_images: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    used: int = 0
    dropped: int = 0
    result: dict[str, Any] | None = None
    displays: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: streaming: called with every piece of output that is kept (never blocks; see main.py)
    sink: Callable[[str, str], None] | None = None
    #: streaming: the unfinished last line of each stream, held until its newline
    partial: dict[str, str] = field(default_factory=dict)

    def write(self, name: str, text: str) -> None:
        with self.lock:
            size = len(text.encode("utf-8", "replace")) if not text.isascii() else len(text)
            room = self.output_limit - self.used
            if size <= room:
                (self.stdout if name == "stdout" else self.stderr).append(text)
                self.used += size
                if self.sink is not None and text:
                    self._stream(name, text)
                return
            if room > 0:
                head = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
                (self.stdout if name == "stdout" else self.stderr).append(head)
                self.used = self.output_limit
                size -= room
                if self.sink is not None and head:
                    self._stream(name, head)
            self.dropped += size

    def _stream(self, name: str, text: str) -> None:
        """Streaming is line-buffered, as a terminal is: print() writes its text and its newline
        separately, and a line must not reach the client in two pieces depending on timing.
        A partial line goes out on flush() or when the cell ends."""
        pending = self.partial.get(name, "") + text
        cut = pending.rfind("\n") + 1
        if cut:
            assert self.sink is not None
            self.sink(name, pending[:cut])
        self.partial[name] = pending[cut:]

    def flush_stream(self) -> None:
        with self.lock:
            for name, rest in self.partial.items():
                if rest and self.sink is not None:
                    self.sink(name, rest)
            self.partial.clear()

    def add_display(self, data: dict[str, Any]) -> None:
        kept: dict[str, Any] = {}
        for mime, value in data.items():
            if isinstance(value, bytes):
                if len(value) <= self.image_limit:
                    kept[mime] = value
                else:
                    self.dropped += len(value)
            elif isinstance(value, str):
                if len(value) <= self.output_limit:
                    kept[mime] = value
                else:
                    kept[mime] = value[: self.output_limit]
                    self.dropped += len(value) - self.output_limit
            # other JSON-able payloads (application/json as dicts) are kept as they are small
            else:
                kept[mime] = value
        if not kept:
            return
        if sum(isinstance(v, bytes) for d in self.displays for v in d.values()) >= self.max_images:
            self.dropped += sum(len(v) for v in kept.values() if isinstance(v, bytes))
            kept = {k: v for k, v in kept.items() if not isinstance(v, bytes)}
            if not kept:
                return
        self.displays.append(kept)

    def finish(self) -> tuple[str, str, bool]:
        stdout, stderr = "".join(self.stdout), "".join(self.stderr)
        if self.dropped:
            stderr += TRUNCATION_NOTE.format(dropped=self.dropped, limit=self.output_limit)
        return stdout, stderr, bool(self.dropped)


class CaptureStream(io.TextIOBase):
    """sys.stdout / sys.stderr replacement that routes writes to the running cell's output."""

    def __init__(self, kernel: SessionShell, name: str, fd: int) -> None:
        self._kernel = kernel
        self._name = name
        self._fd = fd

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # C code and subprocesses write to the real descriptor, which a drain thread captures
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        kernel = self._kernel
        out = kernel.current
        if out is not None:
            # Output a subprocess or C code wrote to the fd pipes comes first: collect it
            # before this write, so sequential code keeps its order. Only after a pause in
            # writing (anything that runs a process takes far longer than 100 us), so a tight
            # print loop pays no system calls.
            if kernel.before_write is not None:
                now = time.monotonic()
                if now - kernel.last_write > 0.0001:
                    kernel.before_write()
                kernel.last_write = now
            out.write(self._name, text)
        return len(text)

    def flush(self) -> None:
        out = self._kernel.current
        if out is not None and out.sink is not None:
            out.flush_stream()


class _Publisher(DisplayPublisher):
    """display() lands in the running cell's output instead of a frontend."""

    def publish(
        self, data: dict[str, Any], metadata: Any = None, source: Any = None, **kwargs: Any
    ) -> None:
        out = self.shell.session_output if self.shell is not None else None
        if out is not None:
            out.add_display(dict(data))

    def clear_output(self, wait: bool = False) -> None:
        out = self.shell.session_output if self.shell is not None else None
        if out is not None:
            out.displays.clear()


#: Exact types whose instances have no ``_repr_html_``, ``_repr_mimebundle_``,
#: ``_ipython_display_`` or any other ``_repr_*_`` method: only a printer registered for the type
#: (or ``object``) could give them a representation besides text/plain.
_BUILTIN_RESULTS = frozenset(
    {int, float, complex, bool, str, bytes, list, tuple, dict, set, frozenset, range}
)
#: the ``__call__`` of IPython's formatters: a registered printer, else the ``_repr_*_`` method
_FORMATTER_CALLS = frozenset(
    {BaseFormatter.__call__, IPythonDisplayFormatter.__call__, MimeBundleFormatter.__call__}
)


class _DisplayHook(DisplayHook):
    """The last expression's value becomes the cell's result; nothing is printed."""

    #: results formatted by ``_plain_only`` (the tests check it is used)
    quick_results = 0

    def compute_format_data(self, result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if type(result) in _BUILTIN_RESULTS:
            quick = self._plain_only(result)
            if quick is not None:
                self.quick_results += 1
                return quick
        return super().compute_format_data(result)  # type: ignore[no-any-return]

    def _plain_only(self, obj: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``DisplayFormatter.format(obj)`` for a builtin value, without asking the nine other
        formatters: ``x`` as a cell spends ~60 us there, for nothing but text/plain.

        Valid only when each other formatter would provably return None: it is one of
        IPython's (lookup, then a ``_repr_*_`` method the builtin type does not have) and is
        disabled or has no printer for this object, its type or a base (by type, by
        ``module.name`` as deferred, or for this very object). Otherwise None: ask them all.
        The traits are read from ``_trait_values`` (a hundred descriptor reads would cost what
        this saves); one not set yet sends the value the long way.
        """
        shell = self.shell
        display = shell.display_formatter if shell is not None else None
        if type(display) is not DisplayFormatter:
            return None
        try:
            values = display._trait_values
            plain = None
            others = [values["ipython_display_formatter"], values["mimebundle_formatter"]]
            for mime, formatter in values["formatters"].items():
                if mime == "text/plain" and type(formatter) is PlainTextFormatter:
                    plain = formatter
                else:
                    others.append(formatter)
            if plain is None:
                return None
            mro = type(obj).__mro__
            names = [(cls.__module__, cls.__name__) for cls in mro]
            address = id(obj)
            for formatter in others:
                if type(formatter).__call__ not in _FORMATTER_CALLS:
                    return None
                traits = formatter._trait_values
                if not traits["enabled"]:
                    continue
                if address in traits["singleton_printers"]:
                    return None
                printers, deferred = traits["type_printers"], traits["deferred_printers"]
                for cls in mro:
                    if cls in printers:
                        return None
                for key in names:
                    if key in deferred:
                        return None
        except KeyError:
            return None
        # what DisplayFormatter.format does with the one formatter that answers
        data, md = plain(obj), None
        if isinstance(data, tuple) and len(data) == 2:
            data, md = data
        return (
            {} if data is None else {"text/plain": data},
            {} if md is None else {"text/plain": md},
        )

    def __call__(self, result: Any = None) -> None:
        self.check_for_underscore()
        if result is None or self.quiet():
            return
        format_dict, _ = self.compute_format_data(result)
        self.update_user_ns(result)
        self.fill_exec_result(result)
        out = self.shell.session_output if self.shell is not None else None
        if out is not None and format_dict:
            bounded: dict[str, Any] = {}
            for mime, value in format_dict.items():
                if isinstance(value, str) and len(value) > out.output_limit:
                    out.dropped += len(value) - out.output_limit
                    value = value[: out.output_limit]
                bounded[mime] = value
            out.result = bounded


class _TraitShell(InteractiveShell):
    """The shell with its per-cell bookkeeping in traitlets, as IPython ships it: the reference
    the fast-path tests compare ``_Shell`` with. It is named ``_Shell`` too, so that what user
    code sees of the shell (its repr, an AttributeError's message) compares equal."""

    displayhook_class = _DisplayHook
    display_pub_class = _Publisher
    session_output: CellOutput | None = None

    @contextlib.contextmanager
    def _tee(self, channel: str) -> Iterator[None]:
        # IPython copies every write into the history manager, even with history disabled,
        # and never frees it: a session that prints 1 GB would hold 1 GB. Our capture is
        # already bounded, so no copy is kept.
        yield

    def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
        text = strip_ansi(self.InteractiveTB.stb2text(stb))
        out = self.session_output
        if out is not None:
            name = getattr(etype, "__name__", str(etype))
            out.error = {"ename": name, "evalue": str(evalue), "traceback": text}


_TraitShell.__name__ = _TraitShell.__qualname__ = "_Shell"


# -- per-cell bookkeeping without traitlets ------------------------------------------------
#
# IPython keeps a cell's bookkeeping in traitlets: ``execution_count``, the last result and
# success, the displayhook's ``exec_result`` and the history's ``_i``/``_ii``/``_iii``/``_i00``.
# Each of the nine sets per cell goes through validation and change notification, which no one
# observes here, and together they cost more than compiling and running ``x += 1``. The lean
# classes shadow those traits with plain attributes of the same names, defaults and values;
# ``SessionShell(fast_path=False)`` builds IPython's own classes, and the fast-path tests run
# every cell through both and compare. The one difference: an observer that user code registers
# on one of these names (``get_ipython().observe(f, "execution_count")``) is not called.


class _LeanDisplayHook(_DisplayHook):
    exec_result: ExecutionResult | None = None


class _LeanHistory(HistoryManager):
    """IPython's history manager with plain input aliases and, while history is off (as it
    always is here), IPython's ``store_inputs`` without its database write cache: nothing ever
    writes that out then, so every cell's source was kept there a second time (besides ``In``)
    for the life of the session. Without the cache it reads five traits a cell fewer (two
    calls each), and the shell from a plain reference that an observer keeps current (the
    input lists are read each time: traitlets does not notify an assignment of an equal list,
    so a copy of one would go stale)."""

    _i00 = _i = _ii = _iii = ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._off = not self.enabled
        self._shell = self.shell
        self.observe(self._moved, names=["shell"])

    def _moved(self, change: Any) -> None:
        self._shell = change["new"]

    def store_inputs(self, line_num: int, source: str, source_raw: str | None = None) -> None:
        if not self._off:
            super().store_inputs(line_num, source, source_raw)
            return
        # HistoryManager.store_inputs (IPython 9), step for step, less the write cache
        if source_raw is None:
            source_raw = source
        source = source.rstrip("\n")
        source_raw = source_raw.rstrip("\n")
        if self._exit_re.match(source_raw.strip()):  # exit and quit are not stored
            return
        self.input_hist_parsed.append(source)
        self.input_hist_raw.append(source_raw)
        self._iii, self._ii, self._i, self._i00 = self._ii, self._i, self._i00, source_raw
        to_main = {"_i": self._i, "_ii": self._ii, "_iii": self._iii, f"_i{line_num}": source_raw}
        if self._shell is not None:
            self._shell.push(to_main, interactive=False)


class _LeanCompiler(CachingCompiler):
    """IPython's cell compiler, naming each cell with CPython's own SHA-1 (``_sha1``) instead of
    OpenSSL's through ``hashlib``: the same digest, so the same names, with less code and state
    on a request's path (5-7 us of kernel CPU a request in paired comparisons)."""

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        if _sha1 is None:
            return super().get_code_name(raw_code, transformed_code, number)
        digest = _sha1(transformed_code.encode("utf-8")).hexdigest()
        return f"<ipython-input-{number}-{digest[:12]}>"  # as IPython's ``code_name``


class _Shell(_TraitShell):
    """The session's shell: IPython's, with captured output and plain per-cell bookkeeping."""

    displayhook_class = _LeanDisplayHook
    compiler_class = Type(_LeanCompiler)
    execution_count = 1
    last_execution_succeeded = True
    last_execution_result: ExecutionResult | None = None

    def init_history(self) -> None:
        self.history_manager = _LeanHistory(shell=self, parent=self)
        self.configurables.append(self.history_manager)  # type: ignore[arg-type] # as IPython


# -- the fast path for plain cells ---------------------------------------------------------
#
# A fast path for plain Python cells: IPython's ``run_cell`` minus the work a plain cell needs
# none of.
#
# Of the ~140 us ``InteractiveShell.run_cell`` spends on ``x += 1``, about 40 go to two steps
# whose answer is known in advance for most cells: ``transform_cell`` (tokenizing the cell to look
# for ``%magic``, ``!shell``, ``obj?``, pasted prompts and, for one-line cells, automagic names)
# and ``should_run_async`` (a second compile of the whole cell to look for top-level ``await``).
# A cell with none of the characters those transforms look for comes out of them unchanged, and a
# cell without ``await`` or ``async`` is never a coroutine. For such a cell ``PlainCells`` runs the
# steps of ``run_cell_async`` and ``run_ast_nodes`` in place (their coroutines never suspend for
# it) and IPython's own pieces for the rest (the events, ``run_code``, the displayhook, history,
# the traceback formatting), so results, ``In``/``_i``/``Out``, ``execution_count``, tracebacks
# and displays are IPython's; the corpus test (tests/kernel/test_fastcell.py) holds the copied
# steps to IPython's path. Anything it cannot prove plain returns ``None`` and the caller uses
# ``run_cell``.
#
# The proof is a text check, deliberately conservative: a false alarm costs only the 40 us.

#: Text IPython's input transformers may rewrite: escapes at a line start (``%``, ``!``, ``?``,
#: and the autocall ``,`` ``;`` ``/``), ``x = %magic`` / ``x = !cmd``, help (``?`` anywhere),
#: pasted prompts (``>>>``, ``...``, ``In [1]:``, vi's ``[ins]``), whitespace-only lines (which
#: ``textwrap.dedent`` normalises), and line separators other than ``\n``. A match is not a
#: verdict: the cell is then run through the real ``transform_cell`` and compared.
_MAYBE_TRANSFORMED = re.compile(
    r"^[ \t]*(?:[%!?,;/]|\.\.\.|In \[|\[(?:nav|ins)\])"
    r"|=\s*[%!]|\?|>>>|^[ \t]+$"
    r"|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]",
    re.MULTILINE,
)

#: Text the compiler may warn about (``x is 1``, ``1(2)``, ``'a'[1.5]``, ``assert (x, y)``,
#: invalid escapes, ``1if``). IPython's ``should_run_async`` compiles the cell once more under
#: the name ``<>``, so such a warning is shown twice; for these cells the fast path makes that
#: same call, so the warnings stay the same.
_MAYBE_WARNS = re.compile(
    r"\\|\bis\b|\bassert\b|[\])}'\"\d]\s*[(\[]"
    r"|\d(?:and|else|for|if|in|is|not|or)\b"
)


class _Watched:
    """The shell's traits that ``PlainCells`` reads on every cell, as plain attributes kept
    current by a traitlets observer: a trait read is two Python calls (``__get__``, ``get``),
    and these were 11 of them a cell. An observer sees every assignment that changes a value
    (``%autocall 1`` included). Only values and objects are copied: traitlets does not notify
    the assignment of an equal list (``ast_transformers = []`` when it is empty), so a copy
    of a list trait would go stale; those are read from the shell each time."""

    NAMES = (
        "input_transformer_manager",
        "prefilter_manager",
        "autocall",
        "automagic",
        "history_manager",
        "builtin_trap",
        "display_trap",
        "ast_node_interactivity",
        "autoawait",
    )
    input_transformer_manager: Any
    prefilter_manager: Any
    autocall: int
    automagic: bool
    history_manager: HistoryManager
    builtin_trap: Any
    display_trap: Any
    ast_node_interactivity: str
    autoawait: bool

    def __init__(self, shell: InteractiveShell) -> None:
        for name in self.NAMES:
            setattr(self, name, getattr(shell, name))
        shell.observe(self._changed, names=list(self.NAMES))

    def _changed(self, change: Any) -> None:
        setattr(self, change["name"], change["new"])


class PlainCells:
    """Runs plain cells of one shell without ``transform_cell`` and ``should_run_async``.

    The shell's extension points are snapshotted at construction: if user code or an extension
    later adds an input transformer, an AST transformer, a prefilter checker or a custom
    exception handler, every cell goes back through ``run_cell``.
    """

    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell
        self.traits = _Watched(shell)
        itm = shell.input_transformer_manager
        self._transforms = (
            list(itm.cleanup_transforms),
            list(itm.line_transforms),
            list(itm.token_transformers),
        )
        pm = shell.prefilter_manager
        assert pm is not None
        self._checkers = list(pm.checkers)
        self._flags = shell.compile.flags
        #: cells this path ran (the tests assert plain cells do not silently fall back)
        self.taken = 0

    def _unchanged(self) -> bool:
        """The shell is configured as it was when snapshotted: nothing extends the transforms."""
        shell = self.shell
        traits = self.traits
        itm = traits.input_transformer_manager
        return (
            not shell.input_transformers_post
            and not shell.ast_transformers
            and not shell.custom_exceptions
            and shell.trio_runner is None
            # a __future__ import changes how later cells compile: IPython's second compile of
            # the cell (without those flags) could warn where ours would not
            and shell.compile.flags == self._flags
            and itm.cleanup_transforms == self._transforms[0]
            and itm.line_transforms == self._transforms[1]
            and itm.token_transformers == self._transforms[2]
        )

    def _prefilter_is_identity(self, line: str) -> bool:
        """Whether IPython's prefilter (applied to one-line cells only) leaves ``line`` alone:
        no automagic (``pwd``, ``time x``), no ``exit``-style autocall object, no macro, no
        autocall, no Emacs tag. Conservative: a variable that shadows a magic's name still falls
        back, and so does any change to the checkers (disabling one only makes IPython
        transform less, and the checks below do not depend on which are enabled)."""
        shell = self.shell
        traits = self.traits
        pm = traits.prefilter_manager
        if pm.transformers or traits.autocall or pm.checkers != self._checkers:
            return False
        if line.endswith("# PYTHON-MODE"):
            return False
        ifun = split_user_input(line)[2]
        if not ifun:
            return True
        obj = shell.user_ns.get(ifun)
        if isinstance(obj, (Macro, IPyAutocall)):
            return False
        return not (traits.automagic and shell.find_magic(ifun.split(".", 1)[0]))

    def transformed(self, raw: str) -> str | None:
        """The cell as ``transform_cell`` would return it, if that is provably the cell itself
        (plus a final newline); else None."""
        if not raw or raw[0] in " \t\n" or raw.isspace():
            return None  # leading indentation or blank lines are stripped; empty is a no-op
        if "await" in raw or "async" in raw or "__future__" in raw:
            return None
        if not self._unchanged():
            return None
        cell = raw if raw.endswith("\n") else raw + "\n"
        if _MAYBE_TRANSFORMED.search(raw) is not None:
            try:
                if self.shell.transform_cell(raw) != cell:
                    return None
            except Exception:
                return None
            return cell  # the real transform_cell ran, prefilter included
        if "\n" not in raw[:-1]:  # one line, as transform_cell counts (so "x\n\n" is two)
            line = raw.rstrip("\n")
            if not self._prefilter_is_identity(line):
                return None
            # what prefilter_line records for IPython's crash handler
            self.shell._last_input_line = line  # type: ignore[attr-defined]
        return cell

    def plain(self, raw: str) -> str | None:
        """The transformed cell to pass to ``run``, or None: then use ``run_cell``."""
        shell = self.shell
        try:
            cell = self.transformed(raw)
            if (
                cell is not None
                and _MAYBE_WARNS.search(raw) is not None
                # IPython's own call at the same point: its compile warnings (shown under the
                # name ``<>``) appear exactly as they do there. True is unreachable without
                # ``await``; checked so that the text proof is not trusted blindly.
                and shell.should_run_async(raw, transformed_cell=cell, preprocessing_exc_tuple=None)
            ):
                return None
        except Exception:  # whatever went wrong here, IPython's path will say it properly
            return None
        except KeyboardInterrupt:
            # An interrupt here is one run_cell would have taken in transform_cell or
            # should_run_async, inside its try/finally: fire the events that finally fires,
            # then let it propagate as it would from there.
            shell.events.trigger("post_execute")
            shell.events.trigger("post_run_cell", None)
            raise
        return cell

    def run(self, raw: str, cell: str, store_history: bool) -> ExecutionResult | None:
        """``run_cell(raw, store_history)`` for a cell ``plain`` accepted (``cell`` is what it
        returned).

        The body mirrors ``InteractiveShell.run_cell`` and ``_run_cell`` (IPython 9) step for
        step, with ``transform_cell`` and ``should_run_async`` answered in advance and
        ``_tee`` left out (``_Shell`` makes it a no-op).
        """
        shell = self.shell
        self.taken += 1
        result: ExecutionResult | None = None
        try:
            try:
                result = self._run_cell(raw, cell, store_history)
            except BaseException as e:
                try:
                    info = ExecutionInfo(
                        raw, store_history, False, True, None, None, transformed_cell=cell
                    )
                    result = ExecutionResult(info)
                    result.error_in_exec = e
                    shell.showtraceback(running_compiled_code=True)
                except:  # noqa: E722 - as IPython: whatever the traceback display raises
                    pass
        finally:
            shell.events.trigger("post_execute")
            shell.events.trigger("post_run_cell", result)
        return result

    def _run_cell(self, raw: str, cell: str, store_history: bool) -> ExecutionResult:
        """``run_cell_async`` (IPython 9) for a plain cell, in place: not silent, the shell's
        futures, no preprocessing error, a cell that is not blank (``plain`` saw to those), no
        AST transformer (``_unchanged``). Its coroutines, and that of ``run_ast_nodes``, never
        suspend for such a cell, so they run here as plain calls; each statement still goes
        through IPython's own ``run_code``, which handles what the statement raises."""
        shell = self.shell
        info = ExecutionInfo(raw, store_history, False, True, None, None, transformed_cell=cell)
        result = ExecutionResult(info)
        execution_count = result.execution_count = shell.execution_count
        if store_history:
            shell.execution_count += 1
        traits = self.traits
        history = traits.history_manager

        def error_before_exec(value: BaseException) -> ExecutionResult:
            if store_history:
                history.exceptions[execution_count] = shell._format_exception_for_storage(value)
            result.error_before_exec = value
            shell.last_execution_succeeded = False
            shell.last_execution_result = result
            return result

        shell.events.trigger("pre_execute")
        shell.events.trigger("pre_run_cell", info)
        if "get_ipython().run_line_magic(" in cell and "paste" in cell:
            store_history = False
        if store_history:
            history.store_inputs(execution_count, cell, raw)
        shell.logger.log(cell, raw)
        compiler = shell.compile
        with traits.builtin_trap:
            cell_name = compiler.cache(cell, execution_count, raw_code=raw)
            with traits.display_trap:
                try:
                    code_ast = compiler.ast_parse(cell, filename=cell_name)
                except IndentationError as e:
                    shell.showindentationerror()
                    return error_before_exec(e)
                except (OverflowError, SyntaxError, ValueError, TypeError, MemoryError) as e:
                    shell.showsyntaxerror()
                    return error_before_exec(e)
                shell.displayhook.exec_result = result
                assert isinstance(code_ast, ast.Module)
                has_raised = self._run_nodes(code_ast.body, cell_name, result)
                shell.last_execution_succeeded = not has_raised
                shell.last_execution_result = result
                shell.displayhook.exec_result = None
        if store_history:
            history.store_output(execution_count)
            if result.error_in_exec:
                history.exceptions[execution_count] = shell._format_exception_for_storage(
                    result.error_in_exec
                )
        return result

    def _run_nodes(self, nodes: list[ast.stmt], cell_name: str, result: ExecutionResult) -> bool:
        """``run_ast_nodes`` with the shell's interactivity: each statement compiled on its own,
        the last one in ``single`` mode if it is an expression (so its value is displayed)."""
        shell = self.shell
        if not nodes:
            return False
        interactivity = self.traits.ast_node_interactivity
        if interactivity != "last_expr":  # the other modes: IPython's own, as a coroutine
            return bool(
                _pseudo_sync_runner(
                    shell.run_ast_nodes(
                        nodes,
                        cell_name,
                        interactivity=interactivity,
                        compiler=shell.compile,
                        result=result,
                    )
                )
            )
        last = nodes[-1] if isinstance(nodes[-1], ast.Expr) else None
        compiler = shell.compile
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if self.traits.autoawait else 0
        try:
            for node in nodes:
                mod: ast.mod = ast.Interactive([node]) if node is last else ast.Module([node], [])
                # ``with compiler.extra_flags(flags)`` as plain statements (a context manager
                # is five calls a statement): the bits it turns on, off again after
                turn_on = ~compiler.flags & flags
                compiler.flags |= flags
                try:
                    # an AST, as IPython passes it (the stub knows only source text)
                    code = compiler(mod, cell_name, "single" if node is last else "exec")  # type: ignore[arg-type]
                finally:
                    compiler.flags &= ~turn_on
                coroutine = bool(code.co_flags & inspect.CO_COROUTINE)  # never, for plain cells
                if _pseudo_sync_runner(shell.run_code(code, result, async_=coroutine)):
                    return True
            if softspace(sys.stdout, 0):
                print()
        except:  # noqa: E722 - as IPython: a statement that parsed but does not compile
            result.error_before_exec = sys.exc_info()[1]
            shell.showtraceback()
            return True
        return False


#: what a counted cell adds to in the history manager (``SessionShell.no_trace``)
_HISTORY_CONTAINERS = (
    "input_hist_parsed",
    "input_hist_raw",
    "output_hist",
    "output_hist_reprs",
    "outputs",
    "exceptions",
    "db_input_cache",
    "db_output_cache",
)


class SessionShell:
    """One IPython shell plus the glue that captures a cell's stdout, stderr, result and figures.

    Built once in the zygote (so its pages are shared by every session) and used by the child
    after fork.
    """

    def __init__(self, fast_path: bool = True) -> None:
        """``fast_path``: run plain Python cells without IPython's input transformation and
        async detection (see ``PlainCells``) and keep per-cell bookkeeping out of traitlets
        (``_Shell``); off only to compare with IPython's own path in tests."""
        from traitlets.config import Config

        config = Config()
        config.HistoryManager.enabled = False  # no sqlite thread, no history file
        config.InteractiveShell.colors = "nocolor"
        config.InteractiveShell.cache_size = 0  # no Out[] cache keeping figures alive
        config.InteractiveShell.autoindent = False
        self.shell: _TraitShell = (_Shell if fast_path else _TraitShell).instance(config=config)
        self.plain = PlainCells(self.shell) if fast_path else None
        self.current: CellOutput | None = None
        self.stdout = CaptureStream(self, "stdout", 1)
        self.stderr = CaptureStream(self, "stderr", 2)
        #: collects pending fd-level output (set by the kernel once its fd pipes exist)
        self.before_write: Callable[[], None] | None = None
        self.last_write = 0.0
        self._shown_figures: set[int] = set()
        self._pyplot: Any = None
        #: named namespaces (E2B code contexts): module, its dict and the execution count
        self._contexts: dict[str, tuple[Any, dict[str, Any], int]] = {}

    # -- preparation -------------------------------------------------------------------------

    def enable_matplotlib(self) -> None:
        """Agg backend; figures are collected after each cell and display(fig) renders PNG."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib import pyplot
            from matplotlib.figure import Figure
        except ImportError:
            return
        self._pyplot = pyplot
        formatter = self.shell.display_formatter
        assert formatter is not None
        png = formatter.formatters["image/png"]

        def render(fig: Any) -> bytes | None:
            self._shown_figures.add(id(fig))
            return self._render_png(fig)

        png.for_type(Figure, render)

    def warm_up(self) -> None:
        """Touch the code paths of a typical first cell so the zygote pays for them once.

        The cells run as counted cells, so that the history's path is run too: otherwise a
        child's first counted cell writes to the history's objects for the first time since
        the fork, and copies each of their pages then (``make bench-idle`` counts the faults).
        They leave no trace (``no_trace``): a session's first cell is ``In[1]``."""
        cells = [
            WARMUP_CELL,
            "import pandas as _pd\n"
            "_df = _pd.DataFrame({'a': range(3), 'b': [0.5, 1.5, 2.5]})\n"
            "repr(_df); _df.describe(); _df._repr_html_()\n"
            "del _df, _pd\n",
        ]
        if self._pyplot is not None:
            cells.append("import matplotlib.pyplot as _plt\n_plt.plot([1, 2, 3])\ndel _plt\n")
        with self.no_trace():
            for code in cells:
                self.run(code, 1 << 20, 1 << 24, 4)

    @contextlib.contextmanager
    def no_trace(self) -> Iterator[None]:
        """Counted cells run inside leave no trace in the history: the execution count,
        ``In``/``Out`` and the rest of the history, the ``_i`` names and the cells' names (in
        tracebacks and ``linecache``) are put back as they were, in place (``In`` is the same
        list). What the cells did otherwise (their imports, say) stays."""
        shell = self.shell
        history = shell.history_manager
        assert history is not None
        count = shell.execution_count
        containers = [getattr(history, n) for n in _HISTORY_CONTAINERS]
        kept = [(c, c.copy()) for c in (shell.user_ns, shell.user_ns_hidden, *containers)]
        inputs = (history._i00, history._i, history._ii, history._iii)
        names = shell.compile._filename_map
        known = set(names)
        try:
            yield
        finally:
            shell.execution_count = count
            # the namespaces and the history, in place, and without clear(), which would free
            # what the cells just made private: the next counted cell writes to the same memory
            for container, before in kept:
                if isinstance(container, dict):
                    for key in [k for k in container if k not in before]:
                        del container[key]
                    container.update(before)
                else:
                    container[:] = before
            history._i00, history._i, history._ii, history._iii = inputs
            for name in [n for n in names if n not in known]:
                del names[name]
                linecache.cache.pop(name, None)

    # -- execution -----------------------------------------------------------------------------

    def run(
        self,
        code: str,
        output_limit: int,
        image_limit: int,
        max_images: int,
        after: Callable[[], None] | None = None,
        store_history: bool = True,
        sink: Callable[[str, str], None] | None = None,
        context: str | None = None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Run one cell and return the reply header and its blobs (PNG bytes).

        ``sink``, if given, also receives the output as it is written (streaming). ``context``,
        if given, runs the cell in that named namespace (made on first use) instead of the
        default one: separate variables, imports and execution count, the same process.
        """
        if context:
            return self._run_in_context(
                context, code, output_limit, image_limit, max_images, after, store_history, sink
            )
        out = CellOutput(output_limit, image_limit, max_images, sink=sink)
        self.current = out
        self.shell.session_output = out
        self._shown_figures.clear()
        # The same two stream objects for the life of the process, never swapped back: a thread
        # that is inside print() holds only a borrowed reference to sys.stdout, and freeing the
        # object under it (while a write has released the GIL) crashes the interpreter.
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        start = time.perf_counter()
        interrupted = False
        try:
            try:
                plain = self.plain
                cell = plain.plain(code) if plain is not None else None
                if plain is not None and cell is not None:
                    result = plain.run(code, cell, store_history)
                else:
                    result = self.shell.run_cell(code, store_history=store_history)
                error = result.error_in_exec if result is not None else None
                interrupted = isinstance(error, KeyboardInterrupt)
            except KeyboardInterrupt:  # arrived outside user code (e.g. in the displayhook)
                interrupted = True
                if out.error is None:
                    out.error = {
                        "ename": "KeyboardInterrupt",
                        "evalue": "",
                        "traceback": "KeyboardInterrupt",
                    }
            self._collect_figures(out)
            if after is not None:
                after()  # pick up what C code and subprocesses wrote to fds 1 and 2
            if out.sink is not None:
                out.flush_stream()  # a last line without its newline
        finally:
            self.current = None
            self.shell.session_output = None
        duration = (time.perf_counter() - start) * 1000
        return self._reply(out, interrupted, duration)

    def _run_in_context(
        self,
        context: str,
        code: str,
        output_limit: int,
        image_limit: int,
        max_images: int,
        after: Callable[[], None] | None,
        store_history: bool,
        sink: Callable[[str, str], None] | None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Swap the context's namespace in for one cell and the default one back after.

        Kept off ``run``'s path so cells without a context pay nothing for the feature.
        """
        shell = self.shell
        saved = (shell.user_module, shell.user_ns, shell.execution_count)
        entry = self._contexts.get(context)
        fresh = entry is None
        if entry is None:
            module, ns = shell.prepare_user_module(None, None)
            entry = (module, ns, 1)
        self._swap(entry[0], entry[1])
        shell.execution_count = entry[2]
        if fresh:
            shell.init_user_ns()  # In, Out, get_ipython, exit in the fresh namespace
        try:
            return self.run(code, output_limit, image_limit, max_images, after, store_history, sink)
        finally:
            self._contexts[context] = (shell.user_module, shell.user_ns, shell.execution_count)
            self._swap(saved[0], saved[1])
            shell.execution_count = saved[2]

    def _swap(self, module: Any, ns: dict[str, Any]) -> None:
        shell = self.shell
        shell.user_module = module
        shell.user_ns = ns
        shell.ns_table["user_global"] = module.__dict__
        shell.ns_table["user_local"] = ns
        sys.modules["__main__"] = module  # pickle finds the classes a cell defines

    def reset_context(self, context: str) -> bool:
        """Drop a named namespace; its next cell starts a fresh one. False if there was none."""
        return self._contexts.pop(context, None) is not None

    def _render_png(self, fig: Any) -> bytes | None:
        from IPython.core.pylabtools import print_figure

        data = print_figure(fig, "png", bbox_inches="tight")
        return data if isinstance(data, bytes) else None

    def _collect_figures(self, out: CellOutput) -> None:
        plt = self._pyplot
        if plt is None or not plt.get_fignums():
            return
        try:
            for num in plt.get_fignums():
                fig = plt.figure(num)
                if id(fig) in self._shown_figures:
                    continue
                try:
                    png = self._render_png(fig)
                except Exception as exc:  # a broken figure must not break the session
                    out.write("stderr", f"could not render figure {num}: {exc!r}\n")
                    continue
                if png is not None:
                    out.add_display({"image/png": png, "text/plain": f"<Figure {num}>"})
        finally:
            plt.close("all")
            # figures live in reference cycles; free them now rather than at some later gc
            gc.collect()
            _malloc_trim()

    @staticmethod
    def _reply(
        out: CellOutput, interrupted: bool, duration: float
    ) -> tuple[dict[str, Any], list[bytes]]:
        blobs: list[bytes] = []

        def pack(bundle: dict[str, Any]) -> dict[str, Any]:
            packed: dict[str, Any] = {}
            for mime, value in bundle.items():
                if isinstance(value, bytes):
                    packed[mime] = {"$blob": len(blobs)}
                    blobs.append(value)
                elif isinstance(value, (str, int, float, bool, list, dict)) or value is None:
                    packed[mime] = value
            return packed

        stdout, stderr, truncated = out.finish()
        header: dict[str, Any] = {
            "op": "result",
            "status": "error" if out.error is not None else "ok",
            "stdout": stdout,
            "stderr": stderr,
            "truncated": truncated,
            "result": pack(out.result) if out.result else None,
            "displays": [pack(d) for d in out.displays],
            "error": out.error,
            "interrupted": interrupted,
            "duration_ms": round(duration, 3),
        }
        return header, blobs


def reseed_after_fork() -> None:
    """Give this process its own random state: every session was forked from one zygote."""
    import random

    random.seed(os.urandom(32))
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(int.from_bytes(os.urandom(4), "little"))
