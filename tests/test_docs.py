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


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then get the rest as attributes."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_dotted_loopml_name_in_docs_and_docstrings_exists() -> None:
    """``loopml.x.y`` in backticks (docs) or a Sphinx role (docstrings) names a module or object that exists.

    A module that moved (``loopml.server.wire`` became ``loopml.tracking.wire``) leaves
    such names behind; ``loopml.db`` is the database file's name, not a module.
    """
    pattern = re.compile(r"(?::(?:mod|func|class|meth|attr|data|exc):`~?|``?)(loopml(?:\.\w+)+)`")
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "src").rglob("*.py"))]
    names = {name for path in sources for name in pattern.findall(path.read_text())} - {"loopml.db"}
    assert "loopml.tracking.wire" in names and len(names) > 20
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, "names in the docs that do not exist:\n" + "\n".join(missing)


def test_every_loopml_command_in_the_docs_exists() -> None:
    """``loopml CMD [SUB]`` in a fenced block or an inline code span of the docs names a real command.

    Only words that look like commands count (lowercase, as every command is):
    ``loopml UI at http://...`` is a line of output, not a command.
    """
    paths = {tuple(p.split()) for p in _command_paths(typer.main.get_command(app))}
    found, unknown = 0, []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        fenced = False
        for number, line in enumerate(md.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                match = re.match(r"\s*(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?loopml\s+(.*)", line)
                calls = [match.group(1)] if match else []
            else:
                calls = re.findall(r"`(?:\.venv/bin/)?loopml ([^`]*)`", line)
            for call in calls:
                words = tuple(call.split())
                if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
                    continue
                found += 1
                if not any(words[:len(p)] == p for p in paths):
                    unknown.append(f"{md.name}:{number}: loopml {call}")
    assert found > 30
    assert not unknown, "commands in the docs that loopml does not have:\n" + "\n".join(unknown)


def _python_blocks() -> list[tuple[str, str]]:
    """(``file:line``, code) of every fenced python block in README.md and docs/*.md, dedented."""
    import textwrap

    blocks = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = md.read_text().splitlines()
        start = None
        for number, line in enumerate(lines, 1):
            if start is None and line.strip() == "```python":
                start = number
            elif start is not None and line.strip().startswith("```"):
                blocks.append((f"{md.relative_to(ROOT)}:{start}", textwrap.dedent("\n".join(lines[start:number - 1]))))
                start = None
    return blocks


def test_every_python_block_in_the_docs_parses_and_imports_what_exists() -> None:
    """Each block is valid Python, and every ``from loopml... import name`` in it names something real."""
    import ast

    blocks = _python_blocks()
    assert len(blocks) > 10
    problems = []
    for where, code in blocks:
        try:
            tree = ast.parse(code, where)
        except SyntaxError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "loopml":
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.split(".")[0] == "loopml"]
            else:
                continue
            for name in names:
                try:
                    _resolve(name)
                except (ImportError, AttributeError) as exc:
                    problems.append(f"{where}: {name}: {exc}")
    assert not problems, "\n".join(problems)
