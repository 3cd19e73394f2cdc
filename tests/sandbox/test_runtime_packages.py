"""Every package the default runtime promises (runtimes/python/requirements.in), imported and
used once inside a jailed session: documents are written and read back, models fitted, charts
drawn. One session for the module; each test is one cell whose last value it checks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessionpool.engine import Engine
from sessionpool.session import Session
from tests.sandbox.helpers import value

pytestmark = pytest.mark.jail

REQUIREMENTS = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "requirements.in"

#: (distribution name as pinned, a cell using it, the value that cell must end with)
USES: dict[str, tuple[str, object]] = {
    "ipython": ("import IPython\nIPython.version_info[0] >= 8", True),
    "traitlets": (
        "import traitlets\nclass A(traitlets.HasTraits):\n x = traitlets.Int(3)\nA().x",
        3,
    ),
    "numpy": ("import numpy as np\nround(float(np.linalg.det(np.eye(3) * 2)))", 8),
    "pandas": (
        "import pandas as pd\ndf = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n"
        "df.groupby('k').v.sum().to_dict()",
        {"a": 4, "b": 2},
    ),
    "scipy": (
        "from scipy import optimize\nround(float(optimize.brentq(lambda x: x*x - 2, 0, 2)), 6)",
        1.414214,
    ),
    "scikit-learn": (
        "from sklearn.linear_model import LinearRegression\n"
        "m = LinearRegression().fit([[0], [1], [2]], [1, 3, 5])\nround(float(m.coef_[0]), 6)",
        2.0,
    ),
    "statsmodels": (
        "import numpy as np, statsmodels.api as sm\nx = np.arange(20.0)\n"
        "fit = sm.OLS(3 * x + 1, sm.add_constant(x)).fit()\n"
        "[round(float(p), 6) for p in fit.params]",
        [1.0, 3.0],
    ),
    "sympy": ("import sympy as s\nx = s.symbols('x')\nstr(s.integrate(x**2, (x, 0, 3)))", "9"),
    "networkx": (
        "import networkx as nx\ng = nx.path_graph(5)\nnx.shortest_path_length(g, 0, 4)",
        4,
    ),
    "pyarrow": (
        "import pyarrow as pa, pyarrow.parquet as pq\n"
        "pq.write_table(pa.table({'n': [1, 2, 3]}), '/mnt/data/t.parquet')\n"
        "pq.read_table('/mnt/data/t.parquet').column('n').to_pylist()",
        [1, 2, 3],
    ),
    "matplotlib": (
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\n"
        "fig.savefig('/mnt/data/p.png')\nplt.close(fig)\nopen('/mnt/data/p.png', 'rb').read(4)",
        b"\x89PNG",
    ),
    "seaborn": (
        "import seaborn as sns, pandas as pd, matplotlib.pyplot as plt\n"
        "ax = sns.barplot(data=pd.DataFrame({'x': ['a', 'b'], 'y': [1, 2]}), x='x', y='y')\n"
        "n = len(ax.patches)\nplt.close('all')\nn",
        2,
    ),
    "plotly": (
        "import plotly.graph_objects as go, json\n"
        "json.loads(go.Figure(go.Bar(x=[1], y=[2])).to_json())['data'][0]['type']",
        "bar",
    ),
    "pillow": (
        "from PIL import Image\nImage.new('RGB', (4, 3), 'red').save('/mnt/data/i.png')\n"
        "Image.open('/mnt/data/i.png').size",
        (4, 3),
    ),
    "openpyxl": (
        "import openpyxl\nwb = openpyxl.Workbook()\nwb.active['A1'] = 'cell'\n"
        "wb.save('/mnt/data/w.xlsx')\nopenpyxl.load_workbook('/mnt/data/w.xlsx').active['A1'].value",
        "cell",
    ),
    "xlrd": (
        "import openpyxl, xlrd\nopenpyxl.Workbook().save('/mnt/data/new.xlsx')\n"
        "try:\n    xlrd.open_workbook('/mnt/data/new.xlsx')\n"
        "except xlrd.XLRDError as exc:\n    r = str(exc)\nr",
        "Excel xlsx file; not supported",
    ),
    "xlsxwriter": (
        "import xlsxwriter, pandas as pd\nw = xlsxwriter.Workbook('/mnt/data/x.xlsx')\n"
        "w.add_worksheet().write('A1', 41)\nw.close()\n"
        "int(pd.read_excel('/mnt/data/x.xlsx', header=None).iloc[0, 0]) + 1",
        42,
    ),
    "python-docx": (
        "import docx\nd = docx.Document()\nd.add_paragraph('a docx paragraph')\n"
        "d.save('/mnt/data/d.docx')\ndocx.Document('/mnt/data/d.docx').paragraphs[0].text",
        "a docx paragraph",
    ),
    "python-pptx": (
        "from pptx import Presentation\np = Presentation()\n"
        "s = p.slides.add_slide(p.slide_layouts[0])\ns.shapes.title.text = 'a slide'\n"
        "p.save('/mnt/data/s.pptx')\nPresentation('/mnt/data/s.pptx').slides[0].shapes.title.text",
        "a slide",
    ),
    "reportlab": (
        "from reportlab.pdfgen import canvas\nc = canvas.Canvas('/mnt/data/r.pdf')\n"
        "c.drawString(72, 720, 'a pdf line')\nc.save()\nopen('/mnt/data/r.pdf', 'rb').read(5)",
        b"%PDF-",
    ),
    "pypdf": (
        "from reportlab.pdfgen import canvas\nimport pypdf\nc = canvas.Canvas('/mnt/data/q.pdf')\n"
        "c.drawString(72, 720, 'read me back')\nc.save()\n"
        "pypdf.PdfReader('/mnt/data/q.pdf').pages[0].extract_text().strip()",
        "read me back",
    ),
    "pdfplumber": (
        "from reportlab.pdfgen import canvas\nimport pdfplumber\n"
        "c = canvas.Canvas('/mnt/data/pl.pdf')\nc.drawString(72, 720, 'plumbed')\nc.save()\n"
        "pdfplumber.open('/mnt/data/pl.pdf').pages[0].extract_text().strip()",
        "plumbed",
    ),
    "beautifulsoup4": (
        "from bs4 import BeautifulSoup\nBeautifulSoup('<p><b>bold</b></p>', 'html.parser').b.text",
        "bold",
    ),
    "lxml": ("from lxml import etree\netree.fromstring('<a><b>t</b></a>').findtext('b')", "t"),
    "html5lib": (
        "import html5lib\nhtml5lib.parse('<p>x', namespaceHTMLElements=False).find('.//p').text",
        "x",
    ),
    "tabulate": (
        "from tabulate import tabulate\ntabulate([[1, 2]], headers=['a', 'b']).split()[0]",
        "a",
    ),
    "pyyaml": ("import yaml\nyaml.safe_load('a: [1, 2]')", {"a": [1, 2]}),
    "jinja2": ("import jinja2\njinja2.Template('hi {{ n }}').render(n=3)", "hi 3"),
    "markdown": ("import markdown\nmarkdown.markdown('# T')", "<h1>T</h1>"),
    "chardet": (
        "import chardet\nchardet.detect('naïve café'.encode('utf-8'))['encoding']",
        "utf-8",
    ),
    "requests": (
        "import requests\n"
        "requests.Request('GET', 'http://example.invalid', params={'q': 1}).prepare().url",
        "http://example.invalid/?q=1",
    ),
    "tqdm": ("from tqdm import tqdm\nsum(tqdm(range(5), disable=True))", 10),
    "python-dateutil": (
        "from dateutil import parser\nparser.parse('2026-12-04T10:00:00Z').isoformat()",
        "2026-12-04T10:00:00+00:00",
    ),
    "pytz": ("import pytz\nstr(pytz.timezone('Europe/Paris'))", "Europe/Paris"),
    "setuptools": (
        "import os, setuptools\nos.makedirs('/mnt/data/proj/pkg', exist_ok=True)\n"
        "open('/mnt/data/proj/pkg/__init__.py', 'w').close()\n"
        "setuptools.find_packages('/mnt/data/proj')",
        ["pkg"],
    ),
}


def promised() -> list[str]:
    names = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[=<>!~ ]", line, maxsplit=1)[0].lower())
    return names


def test_every_promised_package_has_a_use() -> None:
    """A package added to the runtime gets a use here, and nothing here is unpromised."""
    assert sorted(promised()) == sorted(USES)


@pytest.fixture(scope="module")
async def docs_session(engine: Engine) -> AsyncIterator[Session]:
    pool = engine.pool("default")
    session = await pool.acquire("runtime-packages")
    yield session  # type: ignore[misc]
    await pool.delete("runtime-packages")


@pytest.mark.parametrize("package", sorted(USES))
async def test_the_package_works_in_a_session(docs_session: Session, package: str) -> None:
    cell, expected = USES[package]
    assert await value(docs_session, cell, timeout=120) == expected
