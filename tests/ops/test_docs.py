"""The docs name only what the code has: settings, metrics, log events, commands and exit codes.

Each check reads every Markdown file an operator reads (README.md, docs/*.md) and the shipped
example configuration, extracts the names written in backticks, and looks each up in the code
itself: the configuration models, the argument parser, the metric and event names the package
defines. A document that names something the code does not have fails here, naming the file.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from keyrotd.cli.parser import build_parser
from keyrotd.config.models import Settings
from keyrotd.storage.registry import BUILT_IN, COMMON_KEYS, chosen_backend

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *ROOT.joinpath("docs").glob("*.md")])
PACKAGE_SOURCE = "\n".join(p.read_text() for p in sorted(ROOT.joinpath("keyrotd").rglob("*.py")))

_CODE = re.compile(r"`([^`\n]+)`")
_BLOCK = re.compile(r"^(?: {4}|\t)(.*)$", re.MULTILINE)
_COMMAND_LINE = re.compile(
    r"(?:^\s*(?:\$ )?|\| |&& |; |-- |-u keyrotd |\$\()keyrotd ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?"
)
_EVENT_NAMESPACES = (
    "key",
    "storage",
    "keyset",
    "admin",
    "tls",
    "clock",
    "config",
    "daemon",
    "notify",
    "observe",
    "custody",
    "signer",
    "http",
)


def _snippets(path: Path) -> Iterator[str]:
    """Inline code spans and indented code lines of one document."""
    text = path.read_text()
    yield from _CODE.findall(text)
    yield from _BLOCK.findall(text)


def _is_event(name: str) -> bool:
    """A dotted name the package logs as an event (``storage.batch_read_denied``)."""
    return f'"event": "{name}"' in PACKAGE_SOURCE or f'"{name}"' in PACKAGE_SOURCE


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _settings() -> dict[str, set[str]]:
    """Every section of the configuration and the settings it accepts."""
    sections: dict[str, set[str]] = {}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        model = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(model, type) and issubclass(model, BaseModel):
            sections[name] = set(model.model_fields)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections[name] = set(annotation.model_fields)
    # [storage] is flat: keyrotd's own keys and every built-in backend's (their own models)
    backends = (chosen_backend(kind).settings.model_fields for kind in BUILT_IN)
    sections["storage"] = set(COMMON_KEYS).union(*backends)
    return sections


def _commands() -> set[str]:
    parser = build_parser()
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                names.add(name)
                for inner in sub._actions:
                    if isinstance(inner, argparse._SubParsersAction):
                        names.update(f"{name} {child}" for child in inner.choices)
    return names


def _metric_families() -> set[str]:
    """Metric families the package declares (a Counter "x" is exposed as x_total)."""
    declared = set(re.findall(r"\"(keyrotd_[a-z0-9_]+)\"", PACKAGE_SOURCE))
    exposed = set(declared)
    for name in declared:
        exposed.update({f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"})
    return exposed


def test_every_setting_named_in_the_docs_exists() -> None:
    sections = _settings()
    assert {"storage", "server", "logging", "keysets"} <= set(sections)
    pattern = re.compile(rf"^({'|'.join(sections)})\.([a-z_0-9]+)$")
    missing = []
    for path in DOCS:
        for snippet in _snippets(path):
            for word in re.split(r"[\s,=(){}\[\]]+", snippet):
                match = pattern.match(word.strip(".:;"))
                if not match or word.endswith(".py") or _is_event(match.group(0)):
                    continue
                if match.group(2) not in sections[match.group(1)]:
                    missing.append(f"{_where(path)}: {match.group(0)}")
    assert not missing, f"settings the configuration does not have: {sorted(set(missing))}"


def test_every_setting_of_the_example_configuration_exists() -> None:
    sections = _settings()
    section = ""
    missing = []
    for line in ROOT.joinpath("config", "keyrotd.toml").read_text().splitlines():
        head = re.match(r"^#?\s*\[\[?([a-z_]+)\]\]?", line)
        if head:
            section = head.group(1)
            continue
        key = re.match(r"^#?\s*([a-z_0-9]+)\s*=", line)
        if key and section in sections and key.group(1) not in sections[section]:
            missing.append(f"{section}.{key.group(1)}")
    assert not missing, f"config/keyrotd.toml names settings that do not exist: {missing}"


def test_every_metric_named_in_the_docs_exists() -> None:
    families = _metric_families()
    missing = []
    for path in [*DOCS, *ROOT.joinpath("deploy").rglob("*.y*ml")]:
        for name in re.findall(r"\bkeyrotd_[a-z0-9_]+\b", path.read_text()):
            if name.endswith("_") or name == "keyrotd_process_":
                continue  # a prefix such as keyrotd_process_*, written as one
            if name.startswith("keyrotd_process_"):
                continue  # prometheus_client's process collector, namespace keyrotd
            if name not in families:
                missing.append(f"{_where(path)}: {name}")
    assert not missing, f"metrics the daemon does not declare: {sorted(set(missing))}"


def test_every_log_event_named_in_the_docs_is_logged() -> None:
    pattern = re.compile(rf"^(?:{'|'.join(_EVENT_NAMESPACES)})\.[a-z_]+(?:\.[a-z_]+)?$")
    sections = _settings()
    missing = []
    for path in DOCS:
        for snippet in _CODE.findall(path.read_text()):
            if not pattern.match(snippet) or snippet.endswith(".py"):
                continue
            section, _, setting = snippet.partition(".")
            if setting in sections.get(section, ()):
                continue  # a setting, checked above
            if not _is_event(snippet):
                missing.append(f"{_where(path)}: {snippet}")
    assert not missing, f"log events keyrotd never logs: {sorted(set(missing))}"


def test_every_command_named_in_the_docs_exists() -> None:
    commands = _commands()
    missing = []
    for path in DOCS:
        for snippet in _snippets(path):
            if "${" in snippet:
                continue  # another language's string template, not a command line
            # a command line: at the start, after a prompt, a pipe, `--`, `&&` or a user name
            for match in _COMMAND_LINE.finditer(snippet):
                first, second = match.group(1), match.group(2)
                if first not in commands:
                    missing.append(f"{_where(path)}: keyrotd {first}")
                elif (
                    second
                    and any(c.startswith(f"{first} ") for c in commands)
                    and f"{first} {second}" not in commands
                ):
                    missing.append(f"{_where(path)}: keyrotd {first} {second}")
    assert not missing, f"commands the CLI does not have: {sorted(set(missing))}"


def test_the_cli_page_lists_every_command() -> None:
    page = ROOT.joinpath("docs", "cli.md").read_text()
    absent = sorted(c for c in _commands() if f"keyrotd {c}" not in page)
    assert not absent, f"docs/cli.md does not list: {absent}"


def test_the_operations_page_lists_every_metric() -> None:
    page = ROOT.joinpath("docs", "operations.md").read_text()
    declared = set(re.findall(r"\"(keyrotd_[a-z0-9_]+)\"", PACKAGE_SOURCE))
    absent = sorted(name for name in declared if not re.search(rf"\b{name}", page))
    assert not absent, f"docs/operations.md does not list: {absent}"


def test_every_exit_code_named_in_the_docs_is_one_the_cli_uses() -> None:
    used = {0, 1, 2, 3}
    missing = []
    for path in DOCS:
        for code in re.findall(r"\bexit(?:s| code| status)? \[?(\d+)\b", path.read_text()):
            if int(code) not in used:
                missing.append(f"{_where(path)}: exit {code}")
    assert not missing, f"exit codes the CLI never returns: {sorted(set(missing))}"


@pytest.mark.parametrize("path", DOCS, ids=_where)
def test_links_between_documents_resolve(path: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (path.parent / target).exists():
            broken.append(target)
    assert not broken, f"{_where(path)} links to files that do not exist: {broken}"


def test_no_document_cites_a_document_outside_the_repository() -> None:
    outside = re.compile(r"CONTRACT( section| \d|\.md)|STYLE (rule|\d)|\.\./shared|\bissue \d")
    citing = []
    here = Path(__file__).resolve()
    for path in [
        *DOCS,
        *ROOT.joinpath("keyrotd").rglob("*.py"),
        *ROOT.joinpath("config").iterdir(),
        *ROOT.joinpath("deploy").rglob("*.y*ml"),
        *ROOT.joinpath("benchmarks").glob("*.py"),
        *(p for p in ROOT.joinpath("tests").rglob("*.py") if p != here),
    ]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if outside.search(line):
                citing.append(f"{_where(path)}:{number}")
    assert not citing, f"references a reader of this repository cannot open: {citing}"
