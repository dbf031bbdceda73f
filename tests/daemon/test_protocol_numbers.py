"""The protocol's numbers are declared in doc/protocol.md (normative) and written
down in daemon/protocol/protocol.h (the daemon and the CLI) and
client-py/src/nearcache/protocol.py (the Python client; tests/support/rawproto.py
takes its numbers from there). These tests read the document's tables and hold
every copy to them, name by name and number by number, in both directions.
"""
from __future__ import annotations

import re

import pytest

import nearcache.protocol as client
from support import rawproto
from support.nearcached import ROOT

DOC = (ROOT / "doc" / "protocol.md").read_text()
HEADER = (ROOT / "daemon" / "protocol" / "protocol.h").read_text()


# -- the document ------------------------------------------------------------
def doc_table(heading: str) -> dict[str, int]:
    """NAME -> number from the first table under `heading`: rows `| n | `NAME` | ...`."""
    section = DOC.split(heading + "\n", 1)[1]
    rows = {}
    for line in section.splitlines():
        if rows and not line.startswith("|"):
            break  # the table ended
        m = re.match(r"\|\s*(\d+)\s*\|\s*`([A-Z_]+)`\s*\|", line)
        if m:
            rows[m.group(2)] = int(m.group(1))
    assert rows, f"no table under {heading!r} in doc/protocol.md"
    return rows


DOC_OPS = doc_table("## Operations")
DOC_CODES = doc_table("### Status codes")


def doc_versions() -> tuple[int, int]:
    m = re.search(r"The\s+current version is \*\*(\d+)\*\*; the daemon also serves version (\d+)", DOC)
    assert m, "doc/protocol.md no longer states the current and the oldest served version"
    return int(m.group(1)), int(m.group(2))


def doc_closing_codes() -> set[str]:
    """The codes after which the daemon closes the connection (the paragraph on framing errors)."""
    paragraph = DOC.split("**Framing errors**", 1)[1].split("\n\n", 1)[0]
    closing = paragraph.split("Every other error", 1)[0]
    return set(re.findall(r"`([A-Z_]+)`", closing))


# -- daemon/protocol/protocol.h, read as text --------------------------------
def header_enum(name: str) -> dict[str, int]:
    body = re.search(r"enum class %s\b[^{]*\{(.*?)\};" % name, HEADER, re.S).group(1)
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body)}


def header_int(name: str) -> int:
    return int(re.search(r"\b%s\s*=\s*(\d+)" % name, HEADER).group(1))


def header_op_names() -> dict[str, int]:
    """op_name()'s table: the name of op i is element i (element 0 is no op)."""
    body = re.search(r"op_name\(.*?\{(.*?)\};", HEADER, re.S).group(1)
    names = re.findall(r'"([^"]*)"', body)
    return {n: i for i, n in enumerate(names) if i > 0}


def header_code_names() -> dict[str, int]:
    """code_name()'s cases (Code::x -> "NAME"), with x's number from the enum."""
    numbers = header_enum("Code")
    cases = re.findall(r'case Code::(\w+):\s*return "([A-Z_]+)";', HEADER)
    return {name: numbers[enumerator] for enumerator, name in cases}


def header_closing_codes() -> set[str]:
    body = re.search(r"bool code_closes\(Code c\)\s*\{(.*?)\}", HEADER, re.S).group(1)
    return {e.upper() for e in re.findall(r"Code::(\w+)", body)}


# -- the Python modules --------------------------------------------------------
def module_numbers(module) -> dict[str, int]:
    """A module's protocol numbers: its upper-case integer constants, PROTOCOL_VERSION aside."""
    return {k: v for k, v in vars(module).items() if k.isupper() and type(v) is int and k != "PROTOCOL_VERSION"}


# -- the checks ------------------------------------------------------------------
def test_the_document_numbers_ops_and_codes_once():
    assert DOC_OPS and DOC_CODES
    assert len(set(DOC_OPS.values())) == len(DOC_OPS), "two ops share a number"
    assert len(set(DOC_CODES.values())) == len(DOC_CODES), "two status codes share a number"
    assert not set(DOC_OPS) & set(DOC_CODES), "an op and a status code share a name"


def test_header_ops_match_the_document():
    assert header_op_names() == DOC_OPS
    # enum class Op: each enumerator is its op's name in lower case (`del`: delete is a C++ keyword).
    ops = {"DELETE" if e == "del" else e.upper(): number for e, number in header_enum("Op").items()}
    assert ops == DOC_OPS
    assert header_int("kMaxOp") == max(DOC_OPS.values())


def test_header_codes_match_the_document():
    assert header_code_names() == DOC_CODES
    assert {k.upper(): v for k, v in header_enum("Code").items()} == DOC_CODES


def test_header_versions_match_the_document():
    assert (header_int("kProtocolVersion"), header_int("kMinProtocolVersion")) == doc_versions()


def test_header_closing_codes_match_the_document():
    assert header_closing_codes() == doc_closing_codes()


@pytest.mark.parametrize("module", [client, rawproto], ids=["nearcache.protocol", "support.rawproto"])
def test_python_numbers_match_the_document(module):
    assert module_numbers(module) == {**DOC_OPS, **DOC_CODES}


def test_python_client_names_versions_and_closing_codes_match_the_document():
    assert {name: code for code, name in client.STATUS_NAMES.items()} == DOC_CODES
    assert client.PROTOCOL_VERSION == doc_versions()[0]
    assert {client.STATUS_NAMES[c] for c in client.CLOSING} == doc_closing_codes()
