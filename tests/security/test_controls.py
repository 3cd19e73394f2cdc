"""Positive controls in the same run: real workloads work under every layer (a filter or limit
that breaks them fails here)."""

from __future__ import annotations

import base64

import pytest

from tests.security.helpers import NEW, Api, q

pytestmark = pytest.mark.jail


def test_numpy_and_pandas(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "import numpy as np, pandas as pd\n"
        "a = np.arange(1_000_000, dtype=np.float64)\n"
        "df = pd.DataFrame({'k': np.arange(1000) % 7, 'v': np.arange(1000)})\n"
        "inv = np.linalg.inv([[2.0, 0], [0, 4]])\n"
        "float(a.sum()), int(df.groupby('k').v.sum().loc[3]), float(inv[1][1])",
    )
    assert found == (499999500000.0, 71500, 0.25)


def test_scipy_and_scikit_learn(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "from scipy import optimize, stats\n"
        "from sklearn.linear_model import LinearRegression\nimport numpy as np\n"
        "x = np.arange(50).reshape(-1, 1)\n"
        "m = LinearRegression().fit(x, 3 * x.ravel() + 1)\n"
        "round(float(optimize.minimize_scalar(lambda v: (v - 2) ** 2).x), 3),"
        " round(float(m.coef_[0]), 3), round(float(stats.norm.cdf(0)), 3)",
    )
    assert found == (2.0, 3.0, 0.5)


def test_threads_and_a_process_pool(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor\n"
        "import multiprocessing as mp\n"
        "with ThreadPoolExecutor(8) as ex:\n"
        "    t = sum(ex.map(lambda v: v * v, range(100)))\n"
        "with ProcessPoolExecutor(2, mp_context=mp.get_context('fork')) as ex:\n"
        "    p = sum(ex.map(abs, range(-10, 0)))\n"
        "t, p",
    )
    assert found == (328350, 55)


def test_subprocess_and_shell(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'print(6*7)'], capture_output=True,"
        " text=True).stdout.strip(), subprocess.run('echo hi | tr a-z A-Z', shell=True,"
        " capture_output=True, text=True).stdout.strip()",
    )
    assert found == ("42", "HI")
    shell = api.shell(ident, "ls / && python3 -c 'print(1)'; echo done")
    assert shell["status"] == "0" and "done" in shell["result"]["stdout"]


def test_matplotlib_figure_comes_back_as_png(api: Api, ident: str) -> None:
    props = api.ok(
        ident,
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('control')\nplt.show()",
    )
    result = props["result"]
    assert isinstance(result, dict), result
    assert base64.b64decode(result["base64_data"]).startswith(b"\x89PNG")


def test_mnt_data_round_trip(api: Api, ident: str) -> None:
    payload = bytes(range(256)) * 1000
    assert api.upload(ident, "in.bin", payload).status_code == 200
    found = api.value(
        ident,
        "import hashlib\ndata = open('/mnt/data/in.bin', 'rb').read()\n"
        "open('/mnt/data/out.csv', 'w').write('a,b\\n1,2\\n')\n"
        "import pandas as pd\nint(pd.read_csv('/mnt/data/out.csv').b.sum()), len(data)",
    )
    assert found == (2, len(payload))
    assert api.download(ident, "out.csv").content == b"a,b\n1,2\n"
    assert sorted(api.listing(ident)) == ["/mnt/data/in.bin", "/mnt/data/out.csv"]
    r = api.client.get(f"/pools/default/files/in.bin/content{q(ident, NEW)}")
    assert r.content == payload


def test_tmp_sqlite_and_sockets_on_the_private_loopback(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "import sqlite3, socket, threading, tempfile\n"
        "db = sqlite3.connect(tempfile.mktemp(suffix='.db'))\n"
        "db.execute('create table t (v)')\ndb.execute('insert into t values (7)')\n"
        "srv = socket.socket()\nsrv.bind(('127.0.0.1', 0))\nsrv.listen()\n"
        "threading.Thread(target=lambda: srv.accept()[0].sendall(b'pong'), daemon=True).start()\n"
        "c = socket.create_connection(srv.getsockname())\n"
        "db.execute('select v from t').fetchone()[0], c.recv(4)",
    )
    assert found == (7, b"pong")
