"""The one look of imgcls's HTML pages (report, compare, check): self-contained, nothing loaded from the
network, so every page opens offline and can be mailed as one file. The only script is the label review's
(reporting/label_review.py), inline, and the page reads without it."""

from __future__ import annotations

import base64
import html

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px} h2{margin:32px 0 10px;border-bottom:2px solid #d7dbe3;padding-bottom:4px}
h3{margin:18px 0 6px;font-size:1.05em}
.sub{color:#5a6272;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #d7dbe3;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:1.4em}
.card span{color:#5a6272;font-size:.85em}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:.9em}
th,td{border:1px solid #d7dbe3;padding:4px 10px;text-align:right}
th{background:#eef0f4} td:first-child,th:first-child{text-align:left}
th.sorted{background:#d6e4ff}
tr.mean td{font-weight:600;background:#f8f9fb}
.grid{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #d7dbe3;border-radius:8px;padding:8px;max-width:540px}
figure.wide{max-width:100%}
figure img{display:block;max-width:100%;height:auto}
figcaption{color:#5a6272;font-size:.85em;margin-top:4px}
.note{color:#5a6272;font-style:italic}
.settings{columns:2 340px;font-size:.88em} .settings div{break-inside:avoid;padding:1px 0}
code{background:#fff;border:1px solid #e3e6ec;border-radius:3px;padding:0 4px}
.finding{border-left:5px solid #999;padding:6px 10px;margin:10px 0;background:#fff}
.error{border-color:#c0392b} .warning{border-color:#e67e22} .info{border-color:#2980b9}
.sev{font-weight:bold;text-transform:uppercase;font-size:.8em}
.thumbs{display:flex;flex-wrap:wrap;gap:8px;margin-top:6px}
.thumbs figure{width:136px;font-size:.72em;word-break:break-all;padding:4px;max-width:none}
.thumbs figure img{max-width:128px;max-height:128px;border:1px solid #ddd}
.thumbs .beside{align-self:center;color:#5a6272;font-size:.85em;max-width:90px}
.nothumb{width:128px;height:80px;background:#eee;display:flex;align-items:center;justify-content:center;color:#c0392b}
pre{white-space:pre-wrap}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document with the shared style."""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><main>{body}</main></body></html>\n")


def table(header: list, rows: list[list], mean_rows: int = 0, sorted_column: int | None = None) -> str:
    """A table; the last ``mean_rows`` rows are set in bold (means, totals)."""
    head = "".join(f"<th{' class=sorted' if i == sorted_column else ''}>{esc(h)}</th>" for i, h in enumerate(header))
    body = []
    for i, row in enumerate(rows):
        cls = ' class="mean"' if i >= len(rows) - mean_rows else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(data: bytes | None, caption: str, wide: bool = False) -> str:
    """A PNG embedded as a data: URI with its caption ('' when there is no image)."""
    if not data:
        return ""
    return (f'<figure{" class=wide" if wide else ""}><img alt="{esc(caption)}" src="{png_uri(data)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")
