"""The README stays a front page, and no link in it or in docs/ leads nowhere: the rest of the
documentation moved to docs/, so a stale link or anchor is the likely way for it to rot."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .conftest import ROOT

README_MAX_LINES = 260
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def _prose(text: str) -> str:
    """The page without code: a ``[x](y)`` inside a code block or span is not a link."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, code marks and punctuation dropped,
    spaces become hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in ``page``, a repeated one numbered as GitHub numbers it."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` whose file, or whose ``#anchor`` in it, does not exist."""
    broken = []
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {os.path.relpath(linked, page.parent)}")
    return broken


def test_the_readme_stays_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to a page in docs/"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_link_check_catches_a_missing_page_and_a_missing_heading(tmp_path: Path) -> None:
    twice = "## Its `first` part: (one)\n\n"
    (tmp_path / "there.md").write_text("# A page\n\n" + twice + twice)
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#its-first-part-one) [ok](there.md#its-first-part-one-1)\n"
        "[ok](#here) [ok](https://example.com/nowhere.md) `[code](gone.md)`\n\n"
        "```\n[code](gone.md)\n```\n\n# Here\n\n"
        "[bad](gone.md) [bad](there.md#its-second-part) [bad](#nowhere)\n"
    )
    assert broken_links(page) == [
        "gone.md: no such file",
        "there.md#its-second-part: no heading #its-second-part in there.md",
        "#nowhere: no heading #nowhere in page.md",
    ]
