"""Repository promises: CI runs the README's test command, the README starts with the two commands."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash")
    return lines[start + 1], lines[start + 2]


def test_ci_runs_the_readme_test_command():
    main_cmd, test_cmd = _readme_commands()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [test_cmd]
    assert "pytest" in test_cmd and "video_sm.finetune --config configs/video_sm/moving_digits.yaml" in main_cmd


def test_license_is_apache():
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
