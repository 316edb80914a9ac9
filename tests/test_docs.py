"""The README stays short, and the documentation holds together: every relative link of
README.md and docs/*.md names a file that exists (and, for a Markdown file, a heading that
exists), and every page of docs/ is in mkdocs.yml's nav. `mkdocs build --strict` in CI
checks the rest (.ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).*?\1")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def relative_links(page: Path) -> list[str]:
    links = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                links.append(target)
    return links


def slug(heading: str) -> str:
    """A heading's anchor as GitHub and mkdocs' toc both make it for the headings used here."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"[ -]+", "-", text).strip("-")


def anchors(page: Path) -> set[str]:
    found = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            found.add(slug(match.group(2)))
    return found


def test_the_readme_is_at_most_250_lines():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines, more than {MAX_README_LINES}: move details into a page of docs/")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_an_existing_file_and_heading(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {file.name}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def nav_pages(nav) -> list[str]:
    """The page files named anywhere in an mkdocs nav (lists of strings or {title: entry})."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for entry in nav.values() for page in nav_pages(entry)]
    return [page for entry in nav or [] for page in nav_pages(entry)]


def test_every_docs_page_is_in_the_mkdocs_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs"
    listed = nav_pages(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(pages) - set(listed)) == [], "docs pages missing from mkdocs.yml's nav"
    assert sorted(set(listed) - set(pages)) == [], "mkdocs.yml's nav names pages docs/ lacks"


def test_the_link_checker_finds_a_broken_link(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title), [gone](missing.md), [web](https://example.org)\n"
                    "`[code](not-a-link.md)`\n```\n[fenced](also-not.md)\n```\n", encoding="utf-8")
    assert relative_links(page) == ["#title", "missing.md"]
    assert anchors(page) == {"title"}
    assert slug("`probe`: linear probes and imputation") == "probe-linear-probes-and-imputation"


def test_the_readmes_library_example_runs_as_written():
    """The first Python block of the README (a model built and called on a batch with a
    missing modality) runs, and gives the shapes its comments state."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    out = namespace["out"]
    assert tuple(out.latent.shape) == (8, 16)
    assert tuple(out.reconstructions["image"].shape) == (8, 1, 28, 28)
