"""The label review of check.html and report.html: each likely label error with Keep / Relabel as X / Drop, by
mouse or keyboard, a class filter and pages, the choices kept by the browser (localStorage) and downloaded as the
relabel CSV that ``imgcls train --relabel`` and ``imgcls check --export-clean DIR --relabel`` apply.

The page stays one file that works from file:// with no server and no network: the script, its styles, the data
and the thumbnails are inline. Without a script (a mail reader) the suspects still show, pictures and all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files

from ..data.relabel import COLUMNS, csv_field, score_text
from ..pages import esc

REVIEW_PAGE_SIZE = 20  # suspects shown at once, so that a page with thousands of them stays quick
REVIEW_KEYS = 9        # keys 1-9 relabel as the n-th class

REVIEW_STYLE = """
.review-bar{position:sticky;top:0;z-index:2;background:#f5f6f8;padding:8px 0;display:flex;flex-wrap:wrap;gap:8px 14px;
align-items:center;border-bottom:1px solid #d7dbe3}
.review-bar button,.suspect button{font:inherit;padding:3px 10px;border:1px solid #b8bfcc;border-radius:5px;
background:#fff;cursor:pointer}
.review-bar .count{font-weight:600} .review-bar .storage{color:#c0392b}
.suspect{background:#fff;border:1px solid #d7dbe3;border-left:5px solid #e67e22;border-radius:6px;padding:8px 10px;
margin:10px 0;scroll-margin-top:70px}
.suspect.decided{border-left-color:#27ae60}
.suspect.current{outline:3px solid #2f6fdb;outline-offset:2px}
.suspect:focus{outline:3px solid #2f6fdb}
.suspect .what{margin:0 0 4px}
.suspect .choice{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin-top:8px}
.suspect button[aria-pressed=true]{background:#2f6fdb;color:#fff;border-color:#2f6fdb}
.suspect .status{color:#5a6272;font-size:.9em;margin-left:6px}
.suspect.decided .status{color:#1e7f46;font-weight:600}
"""


@dataclass
class Suspect:
    """A likely label error as the review shows it."""

    path: str                 # relative to the data folder, as in the relabel file
    given: str
    suggested: str
    text: str                 # one line: the image, its label and the class it looks like
    similar: list[str] = field(default_factory=list)  # images of the suggested class that look most like it


def review_key(root: str, suspects: list[Suspect]) -> str:
    """What the browser files the choices under: the data folder and the ranked suspects, so that reopening or
    redrawing the same check finds them, and another check (other data, other suspects) starts afresh."""
    content = json.dumps([root, [[s.path, s.given, s.suggested] for s in suspects]])
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:20]


def review_data(rows: list[dict], suspects: list[Suspect], class_names: list[str], root: str) -> dict:
    """What the script needs, with every field already as the relabel file writes it: the page joins them with
    the user's actions into the same bytes data/relabel.relabel_csv_text would write. ``rows`` are the file's rows
    (every image, most likely label error first, with the action an undecided image keeps)."""
    names = list(class_names) + sorted({r[k] for r in rows for k in ("given", "suggested")} - set(class_names))
    index = {name: i for i, name in enumerate(names)}
    return {"key": review_key(root, suspects), "classes": list(class_names), "keys": REVIEW_KEYS,
            "page_size": REVIEW_PAGE_SIZE, "header": ",".join(COLUMNS), "names": [csv_field(n) for n in names],
            "rows": [[csv_field(r["path"]), index[r["given"]], index[r["suggested"]], score_text(r["score"]),
                      r["action"]] for r in rows]}


def review_section(rows: list[dict], suspects: list[Suspect], class_names: list[str], root: str, figure,
                   pictured: int) -> str:
    """The review's HTML: a tool bar (shown by the script), one card per suspect (the first ``pictured`` with
    ``figure(rel)`` thumbnails: the image, then the look-alikes of its suggested class), the data and the script.
    ``rows`` must hold every suspect's path."""
    row_of = {r["path"]: i for i, r in enumerate(rows)}
    cards = [_card(s, row_of[s.path], figure if n < pictured else None) for n, s in enumerate(suspects)]
    data = json.dumps(review_data(rows, suspects, class_names, root), separators=(",", ":"))
    return (f"<style>{REVIEW_STYLE}</style><section id='review' aria-label='label review'>"
            + _tool_bar(suspects, class_names) + "<div id='review-list'>" + "".join(cards) + "</div>"
            + "<script type='application/json' id='review-data'>" + data.replace("<", "\\u003c") + "</script>"
            + "<script>" + _script() + "</script></section>")


def review_help(pictured: int, suspects: int) -> str:
    """The lines above the review: what to do, the keys, what the download holds."""
    beyond = (f" The first {pictured} are pictured; the others are named." if suspects > pictured else "")
    return ("<p>For each likely label error choose <b>Keep</b>, <b>Relabel as</b> a class (the suggested one, or "
            "any other) or <b>Drop</b>, then download <code>relabel.csv</code> and pass it to <code>imgcls train "
            "--relabel relabel.csv</code> or <code>imgcls check --export-clean DIR --relabel relabel.csv</code>. "
            "Keys, once you have clicked a suspect: <kbd>k</kbd> keep, <kbd>1</kbd>-<kbd>9</kbd> relabel as the "
            "n-th class, <kbd>d</kbd> drop, arrows previous / next. This browser keeps your choices for this page (reload it "
            "or open the file again) until you clear them. The download lists every image, most likely label "
            "error first; an image you have not decided on goes in with the action the file proposes "
            f"(likely errors: relabel as the suggested class; every other image: keep).{beyond}</p>"
            "<noscript><p class='note'>Choosing needs JavaScript; the suspects are listed below.</p></noscript>")


def _tool_bar(suspects: list[Suspect], class_names: list[str]) -> str:
    def options(side: str, label: str) -> str:
        counts = {c: sum(1 for s in suspects if getattr(s, side) == c) for c in class_names}
        return (f"<optgroup label='{label}'>" + "".join(
            f"<option value='{side}:{esc(c)}'>{label} {esc(c)} ({n})</option>" for c, n in counts.items() if n)
            + "</optgroup>")

    return ("<div class='review-bar' id='review-bar' hidden><label>Show <select id='review-filter'>"
            f"<option value=''>all {len(suspects)} suspects</option>" + options("given", "labelled")
            + options("suggested", "looks like") + "</select></label><span class='count' id='review-count'></span>"
            "<span><button type='button' id='review-prev'>&lsaquo; previous page</button> "
            "<span id='review-page'></span> <button type='button' id='review-next'>next page &rsaquo;</button></span>"
            "<button type='button' id='review-download'>Download relabel.csv</button>"
            "<button type='button' id='review-clear'>Clear my choices</button>"
            "<span class='storage' id='review-storage' hidden>This browser does not keep choices for this page: "
            "download relabel.csv before you close it.</span></div>")


def _card(suspect: Suspect, row: int, figure) -> str:
    pictures = ""
    if figure is not None:
        beside = f"looks like <b>{esc(suspect.suggested)}</b>" + (":" if suspect.similar else "")
        pictures = ("<div class='thumbs'>" + figure(suspect.path) + f"<div class='beside'>{beside}</div>"
                    + "".join(figure(p) for p in suspect.similar) + "</div>")
    return (f"<div class='suspect' tabindex='-1' data-row='{row}' data-path='{esc(suspect.path)}' "
            f"data-given='{esc(suspect.given)}' data-suggested='{esc(suspect.suggested)}'>"
            f"<p class='what'>{esc(suspect.text)}</p>{pictures}<div class='choice'></div></div>")


def _script() -> str:
    return files("imgcls.reporting").joinpath("static", "label_review.js").read_text(encoding="utf-8")
