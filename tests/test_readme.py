"""The README's commands are the ones the project really runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [line for line in text.splitlines() if line.startswith("python3 -m venv .venv && ")]


def test_ci_runs_the_readme_test_command():
    demo, tests = readme_commands()
    assert tests.endswith("-m pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_readme_demo_command_runs_a_maskgate_subcommand_that_exists():
    from maskgate.cli import build_parser

    demo, _ = readme_commands()
    subcommand = demo.rsplit(".venv/bin/maskgate ", 1)[1].split()[0]
    parser = build_parser()
    assert parser.parse_args([subcommand]).command == subcommand


def test_user_docs_never_point_at_internal_issue_numbers():
    import re

    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found = re.findall(r"\bissues? #?\d+\b|(?<![\w/&])#\d+\b", doc.read_text(), flags=re.IGNORECASE)
        assert not found, (doc.name, found)


def test_training_docs_name_every_data_set_with_its_origin_and_licence():
    import pytest

    data = ROOT.parent / "shared" / "data"
    if not data.is_dir():
        pytest.skip("the data sets are not beside the repository (../shared/data)")
    rows = {}
    for line in (ROOT / "docs" / "training.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`data/"):
            rows[cells[0].strip("`").split("{")[0].rstrip("/")] = cells
    folders = [f"data/{p.relative_to(data)}" for group in ("faces", "research") for p in (data / group).iterdir()
               if p.is_dir()] + ["data/scenes", "data/mask-templates"]
    for folder in folders:
        row = next((cells for name, cells in rows.items() if name.startswith(folder)), None)
        assert row is not None, f"docs/training.md does not describe {folder}"
        assert "github.com" in row[3] or "kaggle.com" in row[3], (folder, "origin")
        assert row[4], (folder, "licence")
