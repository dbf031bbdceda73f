"""doc/configuration.md is generated from the option and metric tables: it must be current; the
C++ test names are ones ctest can run."""
from __future__ import annotations

import subprocess

from support.nearcached import NEARCACHED, ROOT


def test_configuration_doc_is_generated_from_the_tables():
    generated = subprocess.run([str(NEARCACHED), "--print-config-doc"], capture_output=True, text=True,
                               check=True).stdout
    committed = (ROOT / "doc" / "configuration.md").read_text()
    assert committed == generated, "regenerate: nearcached --print-config-doc > doc/configuration.md"


def test_catch2_test_names_have_no_semicolon():
    """catch_discover_tests splits a test name at ';' into two names that match
    no test, so ctest reports both as failed: name tests without one."""
    import re
    bad = []
    for f in sorted(ROOT.glob("tests/**/*.cc")):
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            m = re.search(r'TEST_CASE(?:_METHOD)?\((?:[^,"]*,\s*)?"((?:[^"\\]|\\.)*)"', line)
            if m and ";" in m.group(1):
                bad.append(f"{f.relative_to(ROOT)}:{n}")
    assert not bad, bad
