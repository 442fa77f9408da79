"""The project cites only documents it contains.

* Every ``docs/<page>.md`` cited in the README, ``docs/``, ``src/``, ``bench/`` or
  ``tests/``, and every relative Markdown link in the README and ``docs/``, names
  a file that exists; a ``#section`` after it is the anchor GitHub gives one of
  that page's headings.
* No file of the repository cites the design notes the project was started
  from, which are not part of it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]
SCANNED = ("README.md", "docs", "src", "bench", "tests")
TEXT_SUFFIXES = {".md", ".py", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".sh", ""}

# a repository-relative citation of a docs page, as code and prose write it: docs/page.md#section
DOCS_CITATION = re.compile(r"(?<![\w./-])(docs/[\w/-]+\.md)(?:#([\w-]+))?")
# a Markdown link's target: [text](target) or [text](<target>)
MARKDOWN_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?[^)]*\)")
# documents outside the repository (written so that this file does not match itself)
FOREIGN_DOCUMENTS = re.compile(r"\b(?:SPEC|DESIGN)\.md\b|\bSPEC\s+(?:section|§)|shared[/]golden")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link markup reduced to its text, lower case,
    punctuation other than ``-`` and ``_`` dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings (fenced code skipped; a repeated heading
    gets ``-1``, ``-2``, ... as on GitHub)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if re.match(r" {0,3}(```|~~~)", line):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r" {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        if heading:
            base = slug(heading.group(1))
            repeat = seen.get(base, 0)
            seen[base] = repeat + 1
            found.add(base if repeat == 0 else f"{base}-{repeat}")
    return found


def repository_files(root: Path) -> list[Path]:
    """Tracked and new (not ignored) files; every file below ``root`` outside a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=root, capture_output=True, text=True, check=True).stdout.split("\n")
        return [root / name for name in listed if name and (root / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]


def scanned_files(root: Path) -> list[Path]:
    """The files whose citations are checked (not this one: its examples cite made-up pages)."""
    out = []
    for path in repository_files(root):
        relative = path.relative_to(root)
        if (relative.parts[0] in SCANNED and path.suffix in TEXT_SUFFIXES and "data" not in relative.parts
                and path.resolve() != Path(__file__).resolve()):
            out.append(path)
    return sorted(out)


def broken_citations(root: Path) -> list[str]:
    """Each citation whose page or section does not exist, as ``file:line: target (why)``."""
    pages: dict[Path, set[str] | None] = {}

    def check(source: Path, line: int, page: Path, anchor: str | None, target: str) -> str | None:
        if not page.exists():
            return f"{source.relative_to(root)}:{line}: {target} (no such file)"
        if anchor and page.suffix == ".md":
            if page not in pages:
                pages[page] = anchors(page.read_text(encoding="utf-8"))
            if anchor not in pages[page]:
                return f"{source.relative_to(root)}:{line}: {target} (no such section)"
        return None

    problems = []
    for source in scanned_files(root):
        text = source.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for match in DOCS_CITATION.finditer(line):
                problems.append(check(source, number, root / match.group(1), match.group(2), match.group(0)))
            if source.suffix != ".md":
                continue
            for match in MARKDOWN_LINK.finditer(line):
                target = match.group(1)
                if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
                    continue
                path, _, anchor = target.partition("#")
                page = (source.parent / path).resolve() if path else source
                problems.append(check(source, number, page, anchor or None, target))
    return [p for p in problems if p]


def foreign_citations(root: Path) -> list[str]:
    out = []
    for path in repository_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        for number, line in enumerate(text.splitlines(), 1):
            if FOREIGN_DOCUMENTS.search(line):
                out.append(f"{path.relative_to(root)}:{number}: {line.strip()[:100]}")
    return out


# -------------------------------------------------------------------------- the repository


def test_every_cited_page_and_section_exists():
    assert broken_citations(ROOT) == []


def test_the_code_and_readme_cite_the_docs():
    # the check above is only worth something if the citations are there to check
    citing = [path for path in scanned_files(ROOT) if path.suffix != ".md" or path.name == "README.md"]
    cited = {(m.group(1), m.group(2)) for path in citing for m in DOCS_CITATION.finditer(path.read_text(encoding="utf-8"))}
    assert ("docs/algorithm.md", "the-kv-cache-figure") in cited  # tree.py, report.py's legend, README
    assert ("docs/algorithm.md", "tie-rules") in cited  # aggregate.py, README


def test_no_file_cites_documents_the_repository_does_not_hold():
    assert foreign_citations(ROOT) == []


# -------------------------------------------------------------------------- the checker itself


def test_slugs_are_githubs():
    assert slug("The KV-cache figure") == "the-kv-cache-figure"
    assert slug("REBASE: softmax allocation") == "rebase-softmax-allocation"
    assert slug("Quirks of the reference: kept and corrected") == "quirks-of-the-reference-kept-and-corrected"
    assert slug("`ilp_solver` and [HiGHS](https://highs.dev)") == "ilp_solver-and-highs"
    assert slug("Best-of-N") == "best-of-n"
    assert anchors("# A\n## Notes\n```\n# not a heading\n```\n### Notes ##\n") == {"a", "notes", "notes-1"}


def test_broken_citations_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## The loop\n\nSee [above](#the-loop), [x](#gone).\n")
    (tmp_path / "src" / "mod.py").write_text(
        '"""See docs/guide.md#the-loop and docs/guide.md#the-loops."""\n# docs/missing.md\n')
    (tmp_path / "README.md").write_text("[guide](docs/guide.md) and [bad](docs/guide.md#nope), [tests](tests/)\n")
    assert broken_citations(tmp_path) == [
        "README.md:1: docs/guide.md#nope (no such section)",  # found once as a citation ...
        "README.md:1: docs/guide.md#nope (no such section)",  # ... and once as a Markdown link
        "README.md:1: tests/ (no such file)",
        "docs/guide.md:5: #gone (no such section)",
        "src/mod.py:1: docs/guide.md#the-loops (no such section)",
        "src/mod.py:2: docs/missing.md (no such file)",
    ]


def test_foreign_citations_are_found(tmp_path):
    (tmp_path / "src").mkdir()
    spec_section, design = "SPEC" + " section 1", "DESIGN" + ".md"  # split: this file must not match
    (tmp_path / "src" / "a.py").write_text(f"# the loop of {spec_section}\nok = 1\n")
    (tmp_path / "NOTES.txt").write_text(f"follows {design}\n")
    assert sorted(foreign_citations(tmp_path)) == [f"NOTES.txt:1: follows {design}",
                                                   f"src/a.py:1: # the loop of {spec_section}"]
