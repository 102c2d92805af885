"""The repository cites only its own documents: code, configs, tests and READMEs point to ``docs/design.md``
(its sections ``§X.Y`` and decisions ``DN``), never to a file outside the repository, and every section or
decision they cite exists there."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".sh", ".sbatch", ".cfg", ".toml", ".txt", ".json"}
OUTSIDE = re.compile(r"official\.md|shared/spec|(?<!design )\bdecision \d+\b")
SECTION = re.compile(r"design\.md\s+§(\d+(?:\.\d+)?)((?:,\s*§\d+(?:\.\d+)?)*)")
DECISION = re.compile(r"design decision (D\d+)")


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        files = [ROOT / f for f in out]
    except (OSError, subprocess.CalledProcessError):   # not a git checkout (an sdist): every file
        files = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    this = Path(__file__).resolve()
    return [f for f in files if f.suffix in TEXT_SUFFIXES and f.is_file() and f.resolve() != this]


def design_anchors() -> tuple[set[str], set[str]]:
    text = DESIGN.read_text()
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))
    decisions = set(re.findall(r"^### (D\d+)\. ", text, re.M))
    return sections, decisions


def test_design_doc_has_every_part():
    sections, decisions = design_anchors()
    assert {"1.1", "1.4", "1.5", "1.6", "2", "3.2", "3.3", "3.4", "4", "5"} <= sections
    assert decisions == {f"D{i}" for i in range(1, 13)}


def test_nothing_cites_a_document_outside_the_repository():
    bad = []
    for path in tracked_text_files():
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:120]}")
    assert not bad, "cites a document outside the repository (restate it in docs/design.md):\n" + "\n".join(bad)


def test_every_cited_section_and_decision_exists():
    sections, decisions = design_anchors()
    missing = []
    for path in tracked_text_files():
        text = path.read_text(errors="replace")
        for m in SECTION.finditer(text):
            cited = [m.group(1)] + re.findall(r"§(\d+(?:\.\d+)?)", m.group(2))
            missing += [f"{path.relative_to(ROOT)}: §{c}" for c in cited if c not in sections]
        missing += [f"{path.relative_to(ROOT)}: {d}" for d in DECISION.findall(text) if d not in decisions]
    assert not missing, "cites a part of docs/design.md that does not exist:\n" + "\n".join(missing)


def test_the_checks_can_fail():
    assert OUTSIDE.search("see official.md §1.4") and OUTSIDE.search("(decision 7)")
    assert not OUTSIDE.search("(design decision D7)")
    m = SECTION.search("docs/design.md §1.6, §4")
    assert [m.group(1)] + re.findall(r"§(\d+(?:\.\d+)?)", m.group(2)) == ["1.6", "4"]
