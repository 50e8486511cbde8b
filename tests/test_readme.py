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
