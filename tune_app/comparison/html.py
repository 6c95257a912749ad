"""The comparison report as one self-contained HTML file (images inlined).

MLflow's artifact viewer renders ``.html`` artifacts but shows ``report.md`` as raw
text with unresolved image links; ``report.html`` carries its images as data URIs,
so it reads the same in the MLflow UI, a browser, or an e-mail attachment.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_IMG = re.compile(r'(<img\b[^>]*?\bsrc=")([^":]+\.png)(")')

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f6f8fa; }
img { max-width: 100%; height: auto; }
blockquote { border-left: 4px solid #d4a72c; margin: 0.8em 0; padding: 0.2em 1em;
             background: #fff8c5; }
code { background: #f6f8fa; padding: 0 0.25em; border-radius: 3px; }
"""


def _inline(match: re.Match[str], folder: Path) -> str:
    """An ``<img src="x.png">`` with the PNG next to the report inlined."""
    path = folder / match.group(2)
    if not path.is_file():
        return match.group(0)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"{match.group(1)}data:image/png;base64,{data}{match.group(3)}"


def write_html(markdown_path: Path) -> Path:
    """Render ``report.md`` to ``report.html`` beside it, its PNGs inlined."""
    import markdown

    text = markdown_path.read_text()
    title = next((line[2:] for line in text.splitlines() if line.startswith("# ")), "report")
    body = markdown.markdown(text, extensions=["tables"], output_format="html")
    body = _IMG.sub(lambda m: _inline(m, markdown_path.parent), body)
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
    out = markdown_path.with_suffix(".html")
    out.write_text(page)
    return out
