#!/usr/bin/env python3
"""The packaged /etc/nearcache/nearcached.conf, generated from nearcached's option table.

    scripts/package-config.py NEARCACHED --write   regenerate packaging/nearcached.conf
    scripts/package-config.py NEARCACHED --check   fail unless packaging/nearcached.conf is
                                                   what this daemon's table generates, and the
                                                   daemon reads it (as is, and with every line
                                                   uncommented) to its built-in defaults

The table comes from `nearcached --print-config-doc` (name, type, default,
reloadable, help); `--print-config` is the cross-check. The package build runs
--check, so a new daemon option fails the build until this file lists it.
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "packaging" / "nearcached.conf"

HEADER = """\
# /etc/nearcache/nearcached.conf: configuration of nearcached (nearcached.service).
#
# Every option is listed with its default, commented out: uncomment a line to
# change it. Format: `name = value`, `#` starts a comment; sizes take K, M and
# G suffixes (powers of 1024), modes are octal. `nearcached --help` and
# /usr/share/doc/nearcache/configuration.md describe the same options.
#
# Options marked [reloadable] take effect on `systemctl reload nearcached`; the
# others need `systemctl restart nearcached`, which starts an empty table.
#
# The unit passes `socket` and `segment` on its command line (files in its
# RuntimeDirectory /run/nearcache; flags override this file). The socket
# (0660) and the segment (0640) belong to the daemon's group, nearcache: add
# the users your Django processes run as to that group.
#
# Generated from nearcached's option table by scripts/package-config.py.
"""

# Said beside the options that the packaged units constrain.
UNIT_NOTES = {
    "socket": "Set by the unit: /run/nearcache/nearcached.sock (nearcached@NAME: /run/nearcache-NAME/).",
    "segment": "Set by the unit: /run/nearcache/nearcached.seg (nearcached@NAME: /run/nearcache-NAME/).",
    "posix_shm": "Not under the packaged units: their PrivateDevices=yes gives the daemon a private "
                 "/dev/shm that clients cannot see, and they set segment to a file.",
}


def option_table(nearcached: str) -> list[dict]:
    doc = subprocess.run([nearcached, "--print-config-doc"], check=True, capture_output=True, text=True).stdout
    rows = []
    in_table = False  # the option table only: the document has other tables (metrics)
    for line in doc.splitlines():
        if line.startswith("| option | type |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            in_table = False
        m = re.match(r"^\| `([a-z_]+)` \| (.*) \|$", line)
        if not in_table or not m:
            continue
        # Cells are separated by " | "; a "|" inside the help text is escaped as "\|".
        cells = [html.unescape(c.replace("\\|", "|")) for c in re.split(r"(?<!\\) \| ", m.group(2))]
        if len(cells) != 4:
            sys.exit(f"package-config: cannot parse option row: {line}")
        typ, default, reloadable, help_ = cells
        rows.append({
            "name": m.group(1),
            "type": typ,
            "default": default[1:-1] if default.startswith("`") else "",  # "automatic" = empty
            "reloadable": reloadable == "yes",
            "help": help_,
        })
    if not rows:
        sys.exit("package-config: no option table in `nearcached --print-config-doc`")
    return rows


def generate(nearcached: str) -> str:
    out = [HEADER.rstrip("\n")]
    for o in option_table(nearcached):
        if o["name"] == "config":  # the file's own path: a command-line matter
            continue
        help_ = o["help"].replace("`", "") + (" [reloadable]" if o["reloadable"] else "")
        out.append("")
        out += textwrap.wrap(help_, 78, initial_indent="# ", subsequent_indent="# ")
        if o["name"] in UNIT_NOTES:
            out += textwrap.wrap(UNIT_NOTES[o["name"]], 78, initial_indent="# ", subsequent_indent="# ")
        out.append(f"#{o['name']} = {o['default']}".rstrip())
    return "\n".join(out) + "\n"


def print_config(nearcached: str, *flags: str) -> str:
    r = subprocess.run([nearcached, *flags, "--print-config"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"package-config: nearcached {' '.join(flags)} --print-config failed: {r.stderr.strip()}")
    return r.stdout


def check(nearcached: str) -> None:
    want = generate(nearcached)
    have = CONF.read_text() if CONF.exists() else ""
    if have != want:
        sys.exit(f"package-config: {CONF.relative_to(ROOT)} differs from the daemon's option table; "
                 "run scripts/package-config.py NEARCACHED --write and review the diff")
    names = {o["name"] for o in option_table(nearcached)} - {"config"}
    printed = set(re.findall(r"^([a-z_]+) = ", print_config(nearcached), re.M))
    if printed != names:
        sys.exit(f"package-config: --print-config and --print-config-doc disagree: {sorted(printed ^ names)}")
    listed = set(re.findall(r"^#([a-z_]+) = ?", have, re.M))
    if listed != names:
        sys.exit(f"package-config: options missing from the file: {sorted(names - listed)}")
    # The file as shipped, and with every default uncommented, must both mean "the defaults".
    defaults = print_config(nearcached)
    with tempfile.TemporaryDirectory() as d:
        shipped, uncommented = Path(d, "shipped.conf"), Path(d, "uncommented.conf")
        shipped.write_text(have)
        uncommented.write_text(re.sub(r"^#([a-z_]+ =)", r"\1", have, flags=re.M))
        for f in (shipped, uncommented):
            got = print_config(nearcached, f"--config={f}")
            if got != defaults:
                sys.exit(f"package-config: {f.name} does not yield the built-in defaults:\n{got}")


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[2] not in ("--write", "--check"):
        sys.exit(__doc__)
    nearcached = os.path.abspath(sys.argv[1])
    if sys.argv[2] == "--write":
        CONF.write_text(generate(nearcached))
        print(f"wrote {CONF.relative_to(ROOT)}")
    else:
        check(nearcached)
        print(f"{CONF.relative_to(ROOT)}: every option of the daemon, with its default")


if __name__ == "__main__":
    main()
