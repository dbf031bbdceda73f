"""Install the .deb, run nearcached from its installed unit, use it from Django as
an app user in group nearcache, keep others out, run an instance of the template
unit, then remove and purge. The tests of this module run in order and share one
installation.

Without systemd as PID 1 (CI), `systemctl` cannot start the unit and the
maintainer scripts skip their systemctl calls (they test for /run/systemd/system).
What is covered instead: unitrun.Service starts ExecStart= the way the unit
says (see its docstring for each directive), and `systemd-analyze verify` and
`systemd-analyze security --offline=true` check the installed units themselves.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import re
import stat
import time
from pathlib import Path

import pytest

from pkgtest import (APP_USER, INSTANCE_USER, OUTSIDER, SYSTEM_PYTHON, app_env, as_user, ensure_user,
                      package_status, run, user_exists)
from unitrun import Service, ipc_objects, mode_of, parse_unit

UNIT = "/lib/systemd/system/nearcached.service"
TEMPLATE = "/lib/systemd/system/nearcached@.service"
CONF = "/etc/nearcache/nearcached.conf"
SOCK, SEG = "/run/nearcache/nearcached.sock", "/run/nearcache/nearcached.seg"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 1.4 when written; "OK" ends at 4.9


@pytest.fixture(scope="module")
def installed(dist, system_state):
    run("dpkg", "-i", dist["deb"])
    yield
    # test_stop_remove_purge purges; on an earlier failure system_state does


@pytest.fixture(scope="module")
def service(installed):
    s = Service(UNIT).start()
    yield s
    if s.running():
        s.kill()


@pytest.fixture(scope="module")
def app_user(installed):
    ensure_user(APP_USER, "nearcache")
    ensure_user(OUTSIDER)
    return APP_USER


def proc_status(pid: int) -> dict[str, str]:
    return dict(l.split(":\t", 1) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in l)


# -- the installation --------------------------------------------------------

def test_install_creates_user_group_and_files(installed):
    assert package_status() == "installed"
    pw = pwd.getpwnam("nearcache")
    assert pw.pw_uid < 1000 and pw.pw_shell == "/usr/sbin/nologin", "a system user that cannot log in"
    assert grp.getgrgid(pw.pw_gid).gr_name == "nearcache"
    assert mode_of(CONF) == (0o640, "root", "nearcache")
    assert mode_of("/etc/nearcache") == (0o755, "root", "root")
    assert CONF in run("dpkg-query", "-W", "-f=${Conffiles}", "nearcache").stdout
    for path, mode in (("/usr/sbin/nearcached", 0o755), ("/usr/bin/nearcache", 0o755), (UNIT, 0o644),
                       (TEMPLATE, 0o644), ("/usr/lib/sysusers.d/nearcache.conf", 0o644)):
        assert mode_of(path) == (mode, "root", "root"), path
    # Nothing the package installs is writable by anyone but root.
    for path in run("dpkg", "-L", "nearcache").stdout.split():
        st = os.stat(path)
        assert not st.st_mode & 0o022 and st.st_uid == 0, path
    for page in ("/usr/share/man/man8/nearcached.8.gz", "/usr/share/man/man1/nearcache.1.gz"):
        assert os.path.getsize(page) > 300, page


def test_monitoring_files_are_installed(installed):
    """The Grafana dashboard and the alert rules (tests/daemon/test_monitoring.py checks their metrics)."""
    dash = Path("/usr/share/nearcache/grafana/nearcache.json")
    alerts = Path("/usr/share/nearcache/prometheus/nearcache-alerts.yml")
    for path in (dash, alerts):
        assert mode_of(str(path)) == (0o644, "root", "root"), path
    assert json.loads(dash.read_text())["uid"] == "nearcache"
    assert re.search(r"^groups:$", alerts.read_text(), re.M) and "alert: NearcacheDown" in alerts.read_text()


def test_conffile_is_every_default(installed):
    """The daemon reads the shipped file as the built-in defaults, every option listed."""
    with_file = run("/usr/sbin/nearcached", f"--config={CONF}", "--print-config").stdout
    assert with_file == run("/usr/sbin/nearcached", "--print-config").stdout
    listed = set(re.findall(r"^#([a-z_]+) =", Path(CONF).read_text(), re.M))
    assert listed == set(re.findall(r"^([a-z_]+) =", with_file, re.M))


def test_units_verify_and_security_score(installed):
    for unit in ("nearcached.service", "nearcached@nctest.service"):
        r = run("systemd-analyze", "verify", "--man=no", unit, check=False)
        assert r.returncode == 0 and not r.stderr.strip(), f"{unit}: {r.stderr}"
        r = run("systemd-analyze", "security", "--offline=true", "--no-pager", unit, check=False)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        assert m, r.stdout + r.stderr
        print(f"{unit}: exposure {m.group(1)}")
        assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout


def test_template_has_the_same_sandbox(installed):
    """Only the instance's config, paths and group differ from the main unit."""
    a, b = parse_unit(UNIT)["Service"], parse_unit(TEMPLATE, "nctest")["Service"]
    differ = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert differ == {"ExecStart", "Group", "RuntimeDirectory"}, differ
    assert b["Group"] == ["nearcache-nctest"] and b["RuntimeDirectory"] == ["nearcache-nctest"]
    assert b["ExecStart"] == ["/usr/sbin/nearcached --config=/etc/nearcache/nctest.conf "
                              "--socket=/run/nearcache-nctest/nearcached.sock "
                              "--segment=/run/nearcache-nctest/nearcached.seg"]


# -- the running service -----------------------------------------------------

def test_service_runs_as_the_unit_says(service):
    st = proc_status(service.main_pid)
    uid, gid = pwd.getpwnam("nearcache").pw_uid, grp.getgrnam("nearcache").gr_gid
    assert st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split() == [str(gid)] * 4
    assert st["NoNewPrivs"] == "1" and int(st["CapBnd"], 16) == 0 and int(st["CapEff"], 16) == 0
    assert st["Seccomp"] == "2" and int(st["Seccomp_filters"]) == 3, "allow list, W^X, address families"
    assert os.readlink(f"/proc/{service.main_pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert mode_of("/run/nearcache") == (0o750, "nearcache", "nearcache")
    assert mode_of(SOCK) == (0o660, "nearcache", "nearcache") and stat.S_ISSOCK(os.stat(SOCK).st_mode)
    assert mode_of(SEG) == (0o640, "nearcache", "nearcache")
    assert not os.path.exists(SEG + ".hints")  # layout 2: no object clients write
    assert mode_of(SEG + ".lock") == (0o600, "nearcache", "nearcache")
    # JOURNAL_STREAM set: syslog priorities, no timestamps (journald adds its own).
    lines = service.log().splitlines()
    assert all(re.match(r"^<\d>[a-z]", line) for line in lines[:2]), lines[:2]  # the start line, then listening
    assert any(re.match(r"^<6>nearcached .* listening on /run/nearcache/nearcached.sock", line)
               for line in lines[:2]), lines[:2]
    # RemoveIPC=yes removes the user's /dev/shm and SysV objects at stop: there are none to lose.
    assert ipc_objects(uid, gid) == []


def test_reload(service):
    service.reload()
    for _ in range(50):
        if "SIGHUP: configuration reloaded" in service.log():
            break
        time.sleep(0.1)
    assert "SIGHUP: configuration reloaded" in service.log()
    assert service.running()


def test_cli_status(service, app_user):
    text = run("nearcache", "status").stdout  # root's default socket is the packaged one
    assert "socket: /run/nearcache/nearcached.sock" in text
    prom = run("nearcache", "status", "--prometheus").stdout
    assert re.search(r"^nearcache_\w+ ", prom, re.M), prom
    as_user(APP_USER, ["nearcache", f"--socket={SOCK}", "status", "--json"], env={"PATH": "/usr/bin:/bin"})


def test_django_app_in_group_nearcache(service, app_user, app_venv, workdir):
    r = as_user(APP_USER, [app_venv / "bin/python", workdir / "djangoapp/app.py", "use"], env=app_env(workdir))
    out = json.loads(r.stdout)
    assert out["get_equal"] and out["incr"] == 42 and out["after_delete"] == "gone", out
    assert out["segment_open"] and out["segment"] == SEG, out
    assert out["shm_hits_for_get"] == 1, "the get was served from the shared-memory segment"


def test_outsider_can_neither_read_nor_connect(service, app_user, app_venv, workdir):
    probe = (
        "import errno, json, os, socket\n"
        "out = {}\n"
        f"try: os.open({SEG!r}, os.O_RDONLY); out['segment'] = 'opened'\n"
        "except OSError as e: out['segment'] = errno.errorcode[e.errno]\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try: s.connect({SOCK!r}); out['socket'] = 'connected'\n"
        "except OSError as e: out['socket'] = errno.errorcode[e.errno]\n"
        "print(json.dumps(out))\n")
    out = json.loads(as_user(OUTSIDER, [SYSTEM_PYTHON, "-c", probe]).stdout)
    assert out == {"segment": "EACCES", "socket": "EACCES"}, out
    # The same probe as the app user (in group nearcache) succeeds: the test can tell.
    assert json.loads(as_user(APP_USER, [SYSTEM_PYTHON, "-c", probe]).stdout) == \
        {"segment": "opened", "socket": "connected"}
    # And Django, strict, says so instead of caching.
    r = as_user(OUTSIDER, [app_venv / "bin/python", workdir / "djangoapp/app.py", "use"], env=app_env(workdir),
                check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr[-2000:]


def test_template_instance_is_its_own_trust_domain(service, app_user, app_venv, workdir):
    """nearcached@nctest: /etc/nearcache/nctest.conf, /run/nearcache-nctest, group
    nearcache-nctest, created by the operator as the template's comment says."""
    run("addgroup", "--system", "nearcache-nctest")
    ensure_user(INSTANCE_USER, "nearcache-nctest")
    run("install", "-m", "0640", "-g", "nearcache-nctest", CONF, "/etc/nearcache/nctest.conf")
    inst = Service(TEMPLATE, instance="nctest", workdir=workdir).start()
    try:
        st = proc_status(inst.main_pid)
        groups = {int(g) for g in st["Groups"].split()}
        assert groups == {grp.getgrnam("nearcache-nctest").gr_gid}, "not in group nearcache"
        seg = "/run/nearcache-nctest/nearcached.seg"
        assert mode_of("/run/nearcache-nctest") == (0o750, "nearcache", "nearcache-nctest")
        assert mode_of(seg) == (0o640, "nearcache", "nearcache-nctest")
        env = app_env(workdir, socket="/run/nearcache-nctest/nearcached.sock")
        out = json.loads(as_user(INSTANCE_USER, [app_venv / "bin/python", workdir / "djangoapp/app.py", "use"],
                                 env=env).stdout)
        assert out["get_equal"] and out["segment"] == seg and out["shm_hits_for_get"] == 1, out
        # The main instance's app user cannot reach this one, nor the other way round.
        probe = f"import os\ntry: os.open({seg!r}, os.O_RDONLY); print('opened')\nexcept OSError: print('denied')"
        assert as_user(APP_USER, [SYSTEM_PYTHON, "-c", probe]).stdout.strip() == "denied"
        probe = probe.replace(seg, SEG)
        assert as_user(INSTANCE_USER, [SYSTEM_PYTHON, "-c", probe]).stdout.strip() == "denied"
        assert service.running()
        assert inst.stop() == 0
    finally:
        if inst.running():
            inst.kill()


# -- restart, stop, remove, purge --------------------------------------------

def test_restart_keeps_the_table_warm(service):
    """`systemctl restart`: stop, start; the new daemon adopts the table in /run/nearcache."""
    run("nearcache", "set", "warm-key", "kept")
    gen = json.loads(run("nearcache", "status", "--json").stdout)["generation"]
    assert service.restart() == 0, service.log()
    assert os.path.exists(SEG), "the segment stayed for the next daemon"
    assert "warm start: adopted the table" in service.log(), service.log()
    st = json.loads(run("nearcache", "status", "--json").stdout)
    assert st["start"]["warm"] is True and st["start"]["kept"] >= 1, st["start"]
    assert st["generation"] == gen
    assert json.loads(run("nearcache", "get", "warm-key").stdout) == "kept"


def test_stop_remove_purge(service):
    assert service.stop() == 0, service.log()
    assert "<6>stopped" in service.log()
    # The daemon removed its socket and left its segment for the next start
    # (warm_restart; the empty 0600 lock file may stay too); RuntimeDirectoryPreserve=yes
    # keeps the directory. Removing the package removes both (postrm).
    assert set(os.listdir("/run/nearcache")) <= {"nearcached.seg", "nearcached.seg.lock"}
    assert "nearcached.seg" in os.listdir("/run/nearcache")
    assert service.removed_ipc == []

    run("dpkg", "--remove", "nearcache")
    assert package_status() == "config-files"
    assert not os.path.exists("/usr/sbin/nearcached") and not os.path.exists(UNIT)
    assert os.path.exists(CONF) and os.path.exists("/etc/nearcache/nctest.conf"), "remove keeps configuration"
    assert not os.path.exists("/run/nearcache") and not os.path.exists("/run/nearcache-nctest")

    run("dpkg", "--purge", "nearcache")
    assert package_status() == "not-installed"
    assert not os.path.exists("/etc/nearcache"), "purge removes configuration, instances' included"
    assert not os.path.exists("/usr/lib/sysusers.d/nearcache.conf")
    # Debian keeps system users on purge (files may still carry the uid): so does this package.
    assert user_exists("nearcache")
