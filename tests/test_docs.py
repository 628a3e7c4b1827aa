"""The docs match the code: every CLI command is documented, every doc link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from loopml.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _command_paths(cmd: object, prefix: tuple[str, ...] = ()) -> list[str]:
    # typer vendors its own click: duck-type groups by their `commands`
    if hasattr(cmd, "commands"):
        out = []
        for name, sub in cmd.commands.items():  # type: ignore[attr-defined]
            out += _command_paths(sub, prefix + (name,))
        return out
    return [" ".join(prefix)]


def test_every_cli_command_is_in_docs_cli_md() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    paths = _command_paths(typer.main.get_command(app))
    assert "runs list" in paths and "server" in paths
    missing = [p for p in paths if f"loopml {p}" not in text]
    assert not missing, f"commands missing from docs/cli.md: {missing}"


def test_readme_links_resolve() -> None:
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)\)", md.read_text()):
            if target.startswith("http"):
                continue
            assert (md.parent / target).exists(), f"{md.name} links to missing {target}"


def test_readme_gives_exactly_the_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
