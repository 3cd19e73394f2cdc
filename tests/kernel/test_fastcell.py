"""The fast path for plain cells gives exactly what IPython's run_cell gives.

One corpus of cells runs through a shell with the fast path and through one without it, each in
its own process (shell_driver.py), and every reply, blob, streamed chunk, execution count,
history entry and namespace must match. The corpus also says which cells must take the fast
path, so the optimisation cannot silently turn itself off, and which must not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FAST, SLOW, ANY = True, False, None

#: (cell, must it take the fast path?, extra options for SessionShell.run)
CORPUS: list[tuple[str, bool | None, dict[str, Any]]] = [
    ("x = 1", FAST, {}),
    ("x += 1", FAST, {}),
    ("x", FAST, {}),
    ("print(x)", FAST, {}),
    ("x * 2\n", FAST, {}),
    ("None", FAST, {}),
    ("x;", FAST, {}),
    ("x  ;  # quiet", FAST, {}),
    ("y = x\ny", FAST, {}),
    ("x; y", FAST, {}),
    ("1; 2;", FAST, {}),
    ("a, b = 1, 2\na + b", FAST, {}),
    ("for i in range(3):\n    i\n    print(i)", FAST, {}),
    ("def f(n):\n    return n * 2\n\nf(21)", FAST, {}),
    ("class P:\n    def __init__(self, v):\n        self.v = v\n", FAST, {}),
    ("import pickle\npickle.loads(pickle.dumps(P(3))).v", FAST, {}),
    ("sq = lambda v: v * v\n[sq(v) for v in range(4)]", FAST, {}),
    ("{k: v for k, v in zip('ab', [1, 2])}", FAST, {}),
    ("import math, os\nmath.floor(2.5)", FAST, {}),
    ("__name__", FAST, {}),
    ("from IPython import InteractiveShell\nisinstance(get_ipython(), InteractiveShell)", FAST, {}),
    ("print('héllo ✓ 日本')\n'ü'", FAST, {}),
    ("import sys\nprint('out'); print('err', file=sys.stderr)", FAST, {}),
    ("print('no newline', end='')", FAST, {"stream": True}),
    ("for i in range(3):\n    print(i)", FAST, {"stream": True}),
    ("print('x' * 100)", FAST, {"output_limit": 40}),
    ("'y' * 100", FAST, {"output_limit": 40}),
    # exceptions and their tracebacks
    ("def g():\n    return 1 / 0\ndef h():\n    return g()\nh()", FAST, {}),
    ("undefined_name", FAST, {}),
    ("import json\njson.loads('{')", FAST, {}),
    ("raise ValueError('bad')", FAST, {}),
    ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    raise KeyError('k') from e", FAST, {}),
    ("print('before')\nraise SystemExit(3)", FAST, {}),
    ("raise SystemExit", FAST, {}),
    (
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nimport time\ntime.sleep(2)",
        FAST,
        {},
    ),
    ("def (:", FAST, {}),
    ("x = = 1", FAST, {}),
    ("if True:\nprint(1)", FAST, {}),
    ("print('ran')\nreturn 5", FAST, {}),
    ("print('ran')\nfor i in range(2):\n    pass\nbreak\n'never'", FAST, {"stream": True}),
    ("import bdb\nprint('quit')\nraise bdb.BdbQuit", FAST, {}),
    ("a = 1\nb = a + 1\nprint(b)\nb * 10", FAST, {}),
    ("import sys\nsys.stdout.softspace = 1\nprint('soft', end='')", FAST, {}),
    ("get_ipython().ast_node_interactivity = 'all'", FAST, {}),
    ("1\n2\nprint(3)", FAST, {}),
    ("get_ipython().ast_node_interactivity = 'last_expr'\n4\n5", FAST, {}),
    ("del x\nx", FAST, {}),
    # history and output variables
    ("z = 10", FAST, {}),
    ("z", FAST, {}),
    ("_, __, ___", FAST, {}),
    ("_i, _ii, _iii", FAST, {}),
    # the history's input lists replaced: later cells are stored in the new ones
    (
        "hm = get_ipython().history_manager\n"
        "hm.input_hist_parsed = list(hm.input_hist_parsed)\n"
        "hm.input_hist_raw = list(hm.input_hist_raw)\n"
        "del hm",  # its class is the lean one on the fast path
        FAST,
        {},
    ),
    (
        "(len(get_ipython().history_manager.input_hist_parsed),\n"
        " get_ipython().history_manager.input_hist_raw[-1],\n"
        " In is get_ipython().history_manager.input_hist_parsed)",
        FAST,
        {},
    ),
    ("len(In), In[-1], _i3", FAST, {}),
    ("sorted(Out), type(_oh).__name__", FAST, {}),
    ("_5 if '_5' in dir() else 'no _5'", FAST, {}),
    ("q = 7", FAST, {"store_history": False}),
    ("q", FAST, {"store_history": False}),
    ("q;", FAST, {}),
    ("q", FAST, {"store_history": False}),
    ("_i, len(In)", FAST, {"store_history": False}),
    # rich displays, pandas, matplotlib
    (
        "class Rich:\n    def _repr_html_(self):\n        return '<b>rich</b>'\n"
        "    def _repr_png_(self):\n        return b'\\x89PNG fake'\n"
        "    def __repr__(self):\n        return 'Rich()'\nRich()",
        ANY,
        {},
    ),
    ("from IPython.display import display, HTML\ndisplay(HTML('<i>hi</i>'), Rich())", FAST, {}),
    ("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': [0.5, 1.5]})\ndf", FAST, {}),
    ("df.describe()", FAST, {}),
    ("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]);", FAST, {}),
    ("fig = plt.figure(); plt.plot([1]); display(fig)", FAST, {}),
    ("plt.figure()", FAST, {}),
    # warnings, including the compiler's (IPython shows those twice)
    ("import warnings\nwarnings.warn('careful')", FAST, {}),
    ("warnings.warn('careful')", FAST, {}),
    ("def dep():\n    warnings.warn('old', DeprecationWarning)\ndep()", FAST, {}),
    ("x = 3\nx is 1", FAST, {}),
    ("print('first')\nx is 1\nprint('last')", FAST, {"stream": True}),
    ("'\\d'", FAST, {}),
    ("1(2)", FAST, {}),
    ("assert (x, 1)", FAST, {}),
    ("x is None", FAST, {}),
    ("'abc'[1:]", FAST, {}),
    # text that looks special but is plain (the real transform_cell decides)
    ("s = 'what?'\ns", FAST, {}),
    ("t = 5 % 3\nt != 1", FAST, {}),
    ("'a\\nb'.split('\\n')", FAST, {}),
    ("...", FAST, {}),
    # IPython syntax: magics, shell escapes, help, automagic, prompts, indentation
    ("%time w = 2", SLOW, {}),
    ("w", FAST, {}),
    ("%%capture cap\nprint('hidden')", SLOW, {}),
    ("cap.stdout", FAST, {}),
    ("!echo from-shell", SLOW, {}),
    ("files = !echo a b\nfiles", SLOW, {}),
    ("m = %who_ls\nlen(m) > 0", SLOW, {}),
    ("len?", SLOW, {}),
    ("?len", SLOW, {}),
    ("pwd", SLOW, {}),
    ("pwd\n\n", FAST, {}),  # two lines for IPython: no automagic
    ("who", SLOW, {}),
    (">>> 1 + 1", SLOW, {}),
    ("In [1]: 2 + 2", SLOW, {}),
    ("  k = 4\n  k", SLOW, {}),
    ("\n\nk * 2", SLOW, {}),
    ("k = 1\n   \nk", SLOW, {}),
    ("k\r\n", ANY, {}),
    ("", SLOW, {}),
    ("   ", SLOW, {}),
    ("# only a comment", FAST, {}),
    ("x = 5  # really?\nx", FAST, {}),
    ("pct = '%d' % 5\npct", FAST, {}),
    ("é = 1\n\n\né + 1\n\n", FAST, {}),
    ("if x:\n    pass\nelse:\n    y = 2\n", FAST, {}),
    ("x = 1\t# tab", FAST, {}),
    ("yield 5", FAST, {}),
    ("class B:\n    def __repr__(self):\n        raise RuntimeError('repr')\nB()", FAST, {}),
    ("_ = 5\n_", FAST, {}),
    ("display(1); 2", FAST, {}),
    ("open_paren = (", FAST, {}),
    ("5", FAST, {"store_history": False}),
    ("del _\n7;", FAST, {}),
    # top-level await
    ("import asyncio\nawait asyncio.sleep(0)\n'awaited'", SLOW, {}),
    ("async def co():\n    return 5\nawait co()", SLOW, {}),
    # named contexts
    ("x = 'in a'", FAST, {"context": "a"}),
    ("x, _i, len(In)", FAST, {"context": "a"}),
    ("x, __name__", FAST, {}),
    ("boom()", FAST, {"context": "a"}),
    # hooks that user code registers: fired the same way
    (
        "ip = get_ipython()\n"
        "ip.events.register('pre_run_cell', lambda info: print('pre', info.raw_cell[:5]))\n"
        "ip.events.register('post_run_cell', lambda r: print('post', r.success))",
        FAST,
        {},
    ),
    ("1 + 1", FAST, {}),
    ("1 / 0", FAST, {}),
    ("%autocall 1", SLOW, {}),
    ("abs -3", SLOW, {}),
    ("abs(-3)", SLOW, {}),
    ("%autocall 0", SLOW, {}),
    ("abs(-4)", FAST, {}),
    # automagic off: a magic's bare name is a plain name (the fast path must see the change)
    ("%automagic 0", SLOW, {}),
    ("pwd", FAST, {}),
    ("%automagic 1", SLOW, {}),
    ("pwd", SLOW, {}),
    # extensions to the transforms: afterwards every cell goes through IPython
    (
        "import ast\nclass Neg(ast.NodeTransformer):\n"
        "    def visit_Constant(self, node):\n"
        "        return ast.Constant(-node.value) if isinstance(node.value, int) else node\n"
        "get_ipython().ast_transformers.append(Neg())",
        FAST,
        {},
    ),
    ("5", SLOW, {}),
    ("get_ipython().ast_transformers.clear()", SLOW, {}),
    ("5", FAST, {}),
    # an equal list assigned (traitlets says nothing), then extended: seen all the same
    ("get_ipython().ast_transformers = []", FAST, {}),
    ("get_ipython().ast_transformers.append(Neg())", FAST, {}),
    ("7", SLOW, {}),
    ("get_ipython().ast_transformers.clear()", SLOW, {}),
    ("7", FAST, {}),
    ("get_ipython().input_transformers_cleanup.append(lambda lines: lines)", FAST, {}),
    ("6", SLOW, {}),
    ("get_ipython().input_transformers_cleanup.pop()", SLOW, {}),
    ("6", FAST, {}),
    ("exit", SLOW, {}),
    ("from __future__ import annotations\ndef ann(v: Undefined) -> None: pass", SLOW, {}),
    ("ann.__annotations__", SLOW, {}),
]


def _drive(mode: str, tmp: Path) -> tuple[list[dict[str, Any]], str]:
    cells = [{"code": code, **options} for code, _, options in CORPUS]
    out = tmp / f"{mode}.json"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("shell_driver.py")), mode, str(out)],
        input=json.dumps(cells),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    records: list[dict[str, Any]] = json.loads(out.read_text())
    return records, proc.stdout


@pytest.mark.parametrize("mode", ["fast", "ipython"])
def test_the_warm_up_cells_are_counted_and_leave_no_trace(
    runs: dict[str, tuple[list[dict[str, Any]], str]], driven: Path, mode: str
) -> None:
    """The zygote's warm-up runs its cells as counted ones (so a session's first cell finds
    the history's path already run) and then puts the history back: the shell looks as if
    they had never run."""
    assert runs[mode][0]  # the driver ran
    warm = json.loads((driven / f"{mode}.json.warm_up").read_text())
    assert warm["counted"] and all(warm["counted"])
    assert warm["after"] == warm["before"]
    assert warm["before"]["execution_count"] == 1
    assert warm["before"]["inputs"] == [[""], [""]]


@pytest.fixture(scope="module")
def driven(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the driver's records are written (``runs``)."""
    return tmp_path_factory.mktemp("fastcell")


@pytest.fixture(scope="module")
def runs(driven: Path) -> dict[str, tuple[list[dict[str, Any]], str]]:
    return {mode: _drive(mode, driven) for mode in ("fast", "ipython")}


def _same(fast: dict[str, Any], slow: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in slow if k not in ("fast", "compiler")]
    return {k: (fast[k], slow[k]) for k in keys if fast[k] != slow[k]}


@pytest.mark.parametrize("index", range(len(CORPUS)), ids=[repr(c[0][:30]) for c in CORPUS])
def test_fast_path_matches_run_cell(
    runs: dict[str, tuple[list[dict[str, Any]], str]], index: int
) -> None:
    fast, slow = runs["fast"][0][index], runs["ipython"][0][index]
    assert _same(fast, slow) == {}


def test_whatever_cells_write_to_the_descriptors_matches(
    runs: dict[str, tuple[list[dict[str, Any]], str]],
) -> None:
    assert runs["fast"][1] == runs["ipython"][1]


def test_plain_cells_take_the_fast_path_and_ipython_syntax_does_not(
    runs: dict[str, tuple[list[dict[str, Any]], str]],
) -> None:
    wrong = [
        (code, expected, record["fast"])
        for (code, expected, _), record in zip(CORPUS, runs["fast"][0], strict=True)
        if expected is not None and bool(record["fast"]) != expected
    ]
    assert wrong == []
    assert all(record["fast"] is None for record in runs["ipython"][0])
    # cells are named by the lean compiler (the same names: compared above as cell_names)
    assert {r["compiler"] for r in runs["fast"][0]} == {"_LeanCompiler"}
    assert {r["compiler"] for r in runs["ipython"][0]} == {"CachingCompiler"}


def test_the_text_proof_agrees_with_transform_cell(
    runs: dict[str, tuple[list[dict[str, Any]], str]],
) -> None:
    checked = [r for r in runs["fast"][0] if "transform_cell_agrees" in r]
    assert len(checked) > 50
    assert [r["code"] for r in checked if not r["transform_cell_agrees"]] == []


def test_the_corpus_exercises_what_it_claims(
    runs: dict[str, tuple[list[dict[str, Any]], str]],
) -> None:
    """Guards against a corpus that matches only because nothing happened."""
    by_code = {r["code"]: r for r in runs["ipython"][0]}
    assert by_code["x"]["header"]["result"] is not None
    assert by_code["x;"]["header"]["result"] is None
    assert "Cell In[" in by_code["undefined_name"]["header"]["error"]["traceback"]
    assert by_code["def (:"]["header"]["error"]["ename"] == "SyntaxError"
    assert "To exit" in by_code["print('before')\nraise SystemExit(3)"]["header"]["stderr"]
    assert "from-shell" in by_code["!echo from-shell"]["header"]["stdout"]
    sigint = next(r for r in runs["ipython"][0] if "SIGINT" in r["code"])
    assert sigint["header"]["interrupted"] is True
    assert by_code["x = 3\nx is 1"]["header"]["stderr"].count("SyntaxWarning") == 2
    assert len(by_code["import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]);"]["blobs"]) == 1
    assert "post True" in by_code["1 + 1"]["header"]["stdout"]
    assert by_code["5"]["header"]["result"]["text/plain"] in ("-5", "5")


def test_builtin_results_skip_the_other_formatters_only_when_they_would_not_answer(
    tmp_path: Path,
) -> None:
    out = tmp_path / "formats.json"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("shell_driver.py")), "formats", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    records = json.loads(out.read_text())
    assert [r for r in records if not r[2]] == []  # the same format data, always
    quick: dict[str, set[str]] = {}
    for scenario, value, _, taken in records:
        quick.setdefault(scenario, set())
        if taken:
            quick[scenario].add(value)
    values = {r[1] for r in records}
    ints = {"0", "-5", repr(2**100), "True"}
    assert quick["defaults"] == values
    assert quick["precision"] == values
    assert quick["html for int"] == values - ints
    assert quick["latex for float, deferred"] == values - {"1.5", "1e+300", "nan"}
    assert quick["markdown for 0 only"] == values - {"0"}
    assert quick["json for object"] == set()
    assert quick["json for object, disabled"] == values
    assert quick["mimebundle for list"] == {v for v in values if not v.startswith("[")}
    assert quick["plain text disabled"] == values


_BOOKKEEPING = """
import json, sys, traitlets
from sessionpool.kernel.shell import SessionShell
shell = SessionShell(fast_path=sys.argv[1] == "fast")
ip = shell.shell
shell.run("x = 0", 1 << 20, 0, 0)
sets = []
original = traitlets.TraitType.set
def counting(trait, obj, value):
    sets.append(trait.name)
    return original(trait, obj, value)
traitlets.TraitType.set = counting
for code in ("x += 1", "x", "undefined_name", "print(x)"):
    shell.run(code, 1 << 20, 0, 0)
traitlets.TraitType.set = original
h = ip.history_manager
print(json.dumps({
    "sets": sorted(set(sets)),
    "db_cache": len(h.db_input_cache),
    "aliases": [ip.user_ns[k] for k in ("_i", "_ii", "_iii", "_i5")],
    "count": ip.execution_count,
    "succeeded": ip.last_execution_succeeded,
    "in": len(ip.user_ns["In"]),
}), file=sys.__stdout__)
"""


@pytest.mark.parametrize("mode", ["fast", "ipython"])
def test_per_cell_bookkeeping_skips_traitlets_only_on_the_fast_path(mode: str) -> None:
    """The lean shell keeps execution_count, the last result and the ``_i`` aliases in plain
    attributes (the corpus above proves the values equal): a cell sets none of those traits (an
    error's traceback formatter still sets its own), and the history's never-written database
    cache stays empty instead of growing with every cell."""
    proc = subprocess.run(
        [sys.executable, "-c", _BOOKKEEPING, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["aliases"] == ["undefined_name", "x", "x += 1", "print(x)"]
    assert found["count"] == 6
    assert found["succeeded"] is True
    assert found["in"] == 6
    bookkeeping = {"execution_count", "last_execution_succeeded", "last_execution_result"}
    bookkeeping |= {"exec_result", "_i00", "_i", "_ii", "_iii"}
    if mode == "fast":
        assert bookkeeping & set(found["sets"]) == set()
        assert found["db_cache"] == 0
    else:  # IPython as shipped: the reference really does what the lean shell avoids
        assert bookkeeping <= set(found["sets"])
        assert found["db_cache"] == 5
