"""Kernel semantics through real jailed sessions: state, results, display, figures, errors."""

from __future__ import annotations

import pytest

from sessionpool.session import Session
from sessionpool.types import ExecutionStatus

pytestmark = pytest.mark.jail


async def test_state_persists_between_executions(session: Session) -> None:
    assert (await session.execute("x = 41\nimport math")).status is ExecutionStatus.OK
    r = await session.execute("x + 1, math.floor(2.5)")
    assert r.result is not None
    assert r.result.data["text/plain"] == "(42, 2)"


async def test_a_sessions_first_cell_is_the_first_in_its_history(session: Session) -> None:
    """The zygote's and the host's warm-up cells stay out of ``In``: a fresh session's first
    cell is ``In[1]``, with no earlier input behind it (``_i``)."""
    code = "print(len(In), repr(In[1]), repr(_i), get_ipython().execution_count)"
    r = await session.execute(code)
    assert r.stdout == f"2 {code!r} '' 2\n"


async def test_last_expression_is_the_result_with_rich_mime(session: Session) -> None:
    r = await session.execute("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    assert r.result is not None
    assert "a" in r.result.data["text/plain"]
    assert "<table" in str(r.result.data.get("text/html", ""))


async def test_no_result_for_statements_or_semicolon(session: Session) -> None:
    assert (await session.execute("y = 3")).result is None
    assert (await session.execute("y;")).result is None


async def test_stdout_and_stderr_are_separate_and_ordered(session: Session) -> None:
    r = await session.execute(
        "import sys\nprint('a'); print('b', file=sys.stderr); print('c'); sys.stderr.write('d\\n')"
    )
    assert r.stdout == "a\nc\n"
    assert r.stderr == "b\nd\n"


async def test_fd_level_output_of_subprocesses_is_captured(session: Session) -> None:
    r = await session.execute("import os\nos.system('echo from-shell; echo oops >&2')")
    assert "from-shell" in r.stdout
    assert "oops" in r.stderr


async def test_display_publishes_rich_output(session: Session) -> None:
    code = "from IPython.display import display, HTML\ndisplay(HTML('<b>hi</b>'))"
    r = await session.execute(code)
    assert any(d.data.get("text/html") == "<b>hi</b>" for d in r.displays)


async def test_open_figures_come_back_as_png_and_are_closed(session: Session) -> None:
    r = await session.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]);")
    assert len(r.images) == 1
    assert r.images[0].startswith(b"\x89PNG\r\n\x1a\n")
    again = await session.execute("import matplotlib.pyplot as plt\nlen(plt.get_fignums())")
    assert again.result is not None and again.result.data["text/plain"] == "0"
    assert again.images == []


async def test_display_of_a_figure_is_not_sent_twice(session: Session) -> None:
    r = await session.execute(
        "import matplotlib.pyplot as plt\nfig = plt.figure(); plt.plot([1]); display(fig)"
    )
    assert len(r.images) == 1


async def test_exception_gives_plain_traceback_and_session_survives(session: Session) -> None:
    await session.execute("z = 5")
    r = await session.execute("def f():\n    return 1/0\nf()")
    assert r.status is ExecutionStatus.ERROR
    assert r.error is not None
    assert r.error.ename == "ZeroDivisionError"
    assert "division by zero" in r.error.evalue
    assert "f()" in r.error.traceback
    assert "\x1b[" not in r.error.traceback
    r2 = await session.execute("z")
    assert r2.result is not None and r2.result.data["text/plain"] == "5"


async def test_syntax_error_is_reported(session: Session) -> None:
    r = await session.execute("def (:")
    assert r.status is ExecutionStatus.ERROR
    assert r.error is not None and r.error.ename == "SyntaxError"


async def test_cwd_is_mnt_data_and_pkg_resources_imports(session: Session) -> None:
    r = await session.execute("import os, pkg_resources\nos.getcwd()")
    assert r.status is ExecutionStatus.OK, r.stderr
    assert r.result is not None and r.result.data["text/plain"] == "'/mnt/data'"


async def test_output_cap_truncates_and_says_so(tight_session: Session) -> None:
    r = await tight_session.execute("print('x' * 1_000_000)")
    assert r.truncated
    assert len(r.stdout) <= 64 * 1024
    assert "output truncated" in r.stderr
    assert "more bytes were dropped" in r.stderr


async def test_huge_result_repr_is_capped(tight_session: Session) -> None:
    r = await tight_session.execute("'y' * 5_000_000")
    assert r.truncated
    assert r.result is not None
    assert len(r.result.data["text/plain"]) <= 64 * 1024


async def test_shell_commands_return_exit_code_and_streams(session: Session) -> None:
    r = await session.run_shell("echo out; echo err >&2; pwd; exit 7")
    assert r.exit_code == 7
    assert r.stdout == "out\n/mnt/data\n"
    assert r.stderr == "err\n"


async def test_shell_shares_the_workspace_with_python(session: Session) -> None:
    await session.execute("open('from_py.txt', 'w').write('hello')")
    r = await session.run_shell("cat from_py.txt")
    assert r.stdout == "hello"


async def test_two_sessions_have_different_random_state(engine, session: Session) -> None:  # type: ignore[no-untyped-def]
    other = await engine.pool("default").acquire("random-peer")
    try:
        code = "import random, numpy as np\n(random.random(), float(np.random.rand()))"
        a = await session.execute(code)
        b = await other.execute(code)
        assert a.result is not None and b.result is not None
        assert a.result.data["text/plain"] != b.result.data["text/plain"]
    finally:
        await engine.pool("default").delete("random-peer")


async def test_positive_workloads_run_under_the_filter(session: Session) -> None:
    code = """
import threading, subprocess, sys
import numpy as np, pandas as pd, scipy.linalg, sklearn.linear_model, seaborn, openpyxl
out = []
t = threading.Thread(target=lambda: out.append(np.linalg.svd(np.random.rand(50, 50))[1].sum()))
t.start(); t.join()
df = pd.DataFrame({'a': np.arange(10), 'b': np.arange(10) * 2.0})
df.to_excel('t.xlsx'); pd.read_excel('t.xlsx')
m = sklearn.linear_model.LinearRegression().fit(df[['a']], df['b'])
p = subprocess.run([sys.executable, '-c', 'print(6*7)'], capture_output=True, text=True)
(len(out), round(float(m.coef_[0]), 3), p.stdout.strip())
"""
    r = await session.execute(code)
    assert r.status is ExecutionStatus.OK, r.stderr + (r.error.traceback if r.error else "")
    assert r.result is not None and r.result.data["text/plain"] == "(1, 2.0, '42')"


async def test_pid1_reaps_orphans_but_not_owned_children(session: Session) -> None:
    # a shell whose background child outlives it leaves an orphan that becomes pid 1's zombie
    await session.execute("import subprocess\nsubprocess.run(['sh', '-c', '(sleep 0.05 &)'])")
    await session.execute("import time; time.sleep(0.3)")
    code = """
import os, subprocess
owned = subprocess.Popen(['sh', '-c', 'exit 5'])
import time; time.sleep(0.2)
zombies = []
for p in os.listdir('/proc'):
    if p.isdigit():
        stat = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()
        if stat[0] == 'Z':
            zombies.append(int(p))
zombies == [owned.pid]
"""
    await session.execute(code)
    # the owned child's status survives the reaping that runs after every cell
    r = await session.execute("owned.wait()")
    assert r.result is not None and r.result.data["text/plain"] == "5"
    left = await session.execute(
        "import os\nsum(open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] == 'Z'"
        " for p in os.listdir('/proc') if p.isdigit())"
    )
    assert left.result is not None and left.result.data["text/plain"] == "0"


async def test_subprocess_and_python_output_keep_their_order(session: Session) -> None:
    code = "import os\nfor i in range(15):\n    os.system(f'echo sub{i}')\n    print(f'py{i}')\n"
    r = await session.execute(code)
    assert r.stdout == "".join(f"sub{i}\npy{i}\n" for i in range(15))


async def test_named_contexts_are_separate_namespaces_of_one_process(session: Session) -> None:
    await session.execute("x = 'default'")
    assert (await session.execute("x = 'a'; import os", context="a")).error is None
    r = await session.execute("'x' in dir(), 'os' in dir()", context="b")
    assert r.result is not None and r.result.data["text/plain"] == "(False, False)"
    r = await session.execute("x, os.getpid()", context="a")
    pid = (await session.execute("import os; os.getpid()")).result
    assert r.result is not None and pid is not None
    assert r.result.data["text/plain"] == f"('a', {pid.data['text/plain']})"
    await session.reset_context("a")
    r = await session.execute("x", context="a")
    assert r.error is not None and r.error.ename == "NameError"
    r = await session.execute("x")
    assert r.result is not None and r.result.data["text/plain"] == "'default'"
