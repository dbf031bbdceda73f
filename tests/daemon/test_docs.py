"""doc/configuration.md is generated from the option and metric tables: it must be current."""
from __future__ import annotations

import subprocess

from support.nearcached import NEARCACHED, ROOT


def test_configuration_doc_is_generated_from_the_tables():
    generated = subprocess.run([str(NEARCACHED), "--print-config-doc"], capture_output=True, text=True,
                               check=True).stdout
    committed = (ROOT / "doc" / "configuration.md").read_text()
    assert committed == generated, "regenerate: nearcached --print-config-doc > doc/configuration.md"
