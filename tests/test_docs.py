"""The README and docs/ pages link to each other by file and heading: a page renamed or a
heading reworded must not leave a link pointing nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.MULTILINE)
# docs/configuration.md names its sections by key path with explicit anchors
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def _prose(text: str) -> str:
    """The text outside code blocks and code spans: a `[x](y)` inside code is no link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: inline markup and punctuation dropped, lower case,
    each space a '-' (so "Several processes: workers" is "several-processes-workers")."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id on a page, GitHub numbering repeats (-1, -2, ...), and every
    `<a id=...>` the page sets itself."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set(_HTML_ANCHOR.findall(text))
    for match in _HEADING.finditer(text):
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        out.add(anchor if count == 0 else f"{anchor}-{count}")
    return out


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file is missing or whose anchor is no heading there."""
    problems = []
    for match in _LINK.finditer(_prose(page.read_text(encoding="utf-8"))):
        target = match.group(1)
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # an absolute URL (https:, mailto:): not this repository's to check
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            problems.append(f"{page.name}: {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{page.name}: {target}: no heading #{anchor} in {linked.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    """The check above would pass on any page if it never matched a link."""
    (tmp_path / "other.md").write_text(
        '# Other\n\n## Several processes: workers\n\n<a id="cache-key"></a>\n'
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#several-processes-workers), [ok too](#page), [set](other.md#cache-key),\n"
        "[split\n"
        "text](other.md#other), `[in code](gone.md)`, [web](https://example.com/x#y)\n"
        "[gone](gone.md) and [no heading](other.md#workers) and [here](#nowhere)\n\n"
        "```\n[in a block](gone-too.md)\n```\n"
    )
    assert broken_links(page) == [
        "page.md: gone.md: no such file",
        "page.md: other.md#workers: no heading #workers in other.md",
        "page.md: #nowhere: no heading #nowhere in page.md",
    ]


def test_github_anchors() -> None:
    assert github_anchor("Admin API (admin listener)") == "admin-api-admin-listener"
    assert github_anchor("`cache.key`: the key") == "cachekey-the-key"
    assert github_anchor("Warming and refresh-ahead") == "warming-and-refresh-ahead"


def test_the_docs_map_every_page() -> None:
    """A page in docs/ that the README does not list is a page nobody finds."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlisted = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert unlisted == []


def test_the_layout_names_every_proxy_folder() -> None:
    layout = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    folders = sorted(
        f"proxy/{d.name}/" for d in (ROOT / "proxy").iterdir() if (d / "__init__.py").exists()
    )
    assert [f for f in folders if f not in layout] == []
