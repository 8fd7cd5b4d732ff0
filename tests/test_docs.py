"""The project's documentation is self-contained and its links resolve.

- No file in the repository cites the external algorithm notes the docs/ pages replaced (a file users do not have).
- Every relative Markdown link in docs/*.md and README.md points to an existing file, and every `#anchor` to a
  heading of the target page (GitHub's anchor rules).
- Every `docs/<page>.md#anchor` that code, configs or tests mention names an existing page and heading.
- The per-task tables of docs/mopo.md, docs/micro.md and docs/combo.md list every task file with the values it sets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Spelled in two parts so this file does not match its own check.
FORBIDDEN = ("ALGORITHMS" + ".md").encode()
# Not part of the project's sources: the virtual env, run logs, git's store, caches and build metadata (pip copies
# README.md into *.egg-info/PKG-INFO at install time).
SKIP_DIRS = {".venv", "log", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}
SKIP_SUFFIXES = (".egg-info",)
# Pages linked before they are written; once a page exists it is checked like any other.
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_CODE_REFERENCE = re.compile(r"(?<![\w/.-])(docs/\w[\w.-]*\.md)(?:#([\w-]+))?")


def repository_files(root: Path = ROOT) -> Iterator[Path]:
    """Every file of the working tree, outside SKIP_DIRS and build metadata."""
    for path in sorted(root.iterdir()):
        if path.is_dir():
            if path.name in SKIP_DIRS or path.name.endswith(SKIP_SUFFIXES) or path.is_symlink():
                continue
            yield from repository_files(path)
        elif path.is_file():
            yield path


def prose_lines(text: str) -> Iterator[str]:
    """Markdown lines outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: link syntax reduced to its text, lower case, punctuation dropped (letters,
    digits, `_`, `-` and spaces stay), spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page; repeated headings get GitHub's -1, -2, ... suffixes."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_anchor(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def link_targets(page: Path) -> Iterator[str]:
    """Targets of the Markdown links and images of a page, outside code blocks and inline code."""
    for line in prose_lines(page.read_text(encoding="utf-8")):
        yield from _LINK.findall(_INLINE_CODE.sub("", line))


def broken_link(target: Path, anchor: str | None, root: Path = ROOT) -> str | None:
    """Why a link to `target` (and `#anchor`) does not resolve, or None when it does."""
    try:
        relative = target.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return "points outside the repository"
    if not target.exists():
        return "no such file"
    if anchor:
        if target.suffix != ".md" or target.is_dir():
            return f"#{anchor} on a file that is not a Markdown page"
        if anchor not in anchors(target):
            return f"no heading with anchor #{anchor} in {relative}"
    return None


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """`page: target (reason)` for every relative link of a Markdown page that does not resolve."""
    problems = []
    for raw in link_targets(page):
        if _SCHEME.match(raw):
            continue  # http(s), mailto, ...: not checked offline
        path_part, _, anchor = raw.partition("#")
        target = page if not path_part else page.parent / path_part
        reason = broken_link(target, anchor or None, root)
        if reason:
            problems.append(f"{page.relative_to(root)}: {raw} ({reason})")
    return problems


def documentation_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_file_cites_the_external_algorithm_notes() -> None:
    offenders = [str(path.relative_to(ROOT)) for path in repository_files() if FORBIDDEN in path.read_bytes()]
    assert not offenders, (
        f"{FORBIDDEN.decode()} is not part of this repository; point these files to the docs/ pages instead: "
        + ", ".join(offenders)
    )


def test_docs_pages_exist() -> None:
    pages = {path.name for path in documentation_pages()}
    for name in ("README.md", "dynamics.md", "sac.md", "trainer.md", "datasets.md", "mopo.md", "micro.md", "bc.md"):
        assert name in pages
    assert (ROOT / "docs" / "bcq.md").is_file()


@pytest.mark.parametrize("page", documentation_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_docs_references_in_the_code_resolve() -> None:
    problems = []
    for path in repository_files():
        if path.suffix not in (".py", ".yaml", ".yml", ".md", ".toml", ".txt", ".cfg"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for page, anchor in _CODE_REFERENCE.findall(line):
                reason = broken_link(ROOT / page, anchor or None)
                if reason:
                    problems.append(
                        f"{path.relative_to(ROOT)}:{number}: {page}{'#' + anchor if anchor else ''} ({reason})"
                    )
    assert not problems, "references to docs/ that do not resolve:\n" + "\n".join(problems)


def test_the_checker_reports_what_is_broken(tmp_path: Path) -> None:
    """The checks above can fail: a missing file, a missing anchor and a dropped duplicate suffix are all caught."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Per-task values (λ, h)\n\n## Notes\n\n## Notes\n")
    page = tmp_path / "docs" / "b.md"
    page.write_text(
        "[ok](a.md#per-task-values-λ-h) [ok](a.md#notes-1) [ok](#local) `[code](nowhere.md)`\n"
        "[gone](missing.md) [bad anchor](a.md#defaults) [too many](a.md#notes-2) [web](https://example.org/x)\n"
        "```\n[fenced](nowhere.md)\n```\n## Local\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 3, problems
    assert "missing.md (no such file)" in problems[0]
    assert "#defaults" in problems[1] and "#notes-2" in problems[2]
    assert github_anchor("Transitions and `next_observations`") == "transitions-and-next_observations"
    assert github_anchor("One model step") == "one-model-step"


_TABLE_ROW = re.compile(r"^\|\s*([a-z0-9]+(?:-[a-z0-9]+)+-v\d)\b[^|]*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|")


def per_task_rows(page: Path) -> dict[str, tuple[int, float]]:
    """`task -> (h, coefficient)` from the rows of a page's "Per-task values" section."""
    rows: dict[str, tuple[int, float]] = {}
    section = False
    for line in prose_lines(page.read_text(encoding="utf-8")):
        heading = _HEADING.match(line)
        if heading and len(heading.group(1)) == 2:
            section = github_anchor(heading.group(2)) == "per-task-values"
        match = _TABLE_ROW.match(line) if section else None
        if match:
            rows[match.group(1)] = (int(match.group(2)), float(match.group(3)))
    return rows


@pytest.mark.parametrize("algo", ["mopo", "micro", "combo"])
def test_per_task_tables_match_the_config_files(algo: str) -> None:
    """The h / coefficient columns of the per-task tables are what the task files set (the penalty coefficient λ;
    COMBO's CQL weight β), and every published task file (D4RL names; the -gen files inherit them) has its row."""
    from config import load_config

    rows = per_task_rows(ROOT / "docs" / f"{algo}.md")
    files = {path.stem for path in (ROOT / "configs" / algo).glob("*-v[0-9].yaml")}
    assert set(rows) == files, f"docs/{algo}.md per-task table vs configs/{algo}/: {sorted(set(rows) ^ files)}"
    for task, (horizon, coefficient) in rows.items():
        cfg = load_config(algo, task)
        weight = cfg.cql.weight if algo == "combo" else cfg.penalty_coef
        assert (cfg.rollout_length, weight) == (horizon, coefficient), task
