"""Snapshot the host state the real node touches, and compare two snapshots.

    python3 host_state.py save FILE       # before `up`
    python3 host_state.py check FILE      # after `down`: exit 1 and list what differs

What is compared: iptables/ip6tables rules and chains (every table), ipsets (kube-router's
NetworkPolicy sets), network links, routes, mounts, kubepods cgroups, the sysctls the kubelet,
CNI and node.sh change, the files kept outside e2e/.state (/var/log/containers,
/var/lib/cni), and processes of the node's binaries.
scripts/test.sh runs `save` before the cluster starts and `check` after it stops.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
)
PROCESSES = ("kubelet", "kube-proxy", "kube-router", "metrics-server", "containerd-shim-runc-v2")
# Counters and empty tables that listing creates are not state we left behind.
_COUNTERS = re.compile(r"\[\d+:\d+\]")


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return ""


_BUILTIN_ACCEPT = re.compile(r"^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT$")


def _iptables(binary: str) -> list[str]:
    """Rules and chains as "<table> <line>". A table's built-in chains at their default
    ACCEPT policy are left out: a table appears (with them) once anything touches it, and
    the kernel keeps it loaded; without rules it changes nothing. A changed policy still
    shows, as the old policy line missing."""
    lines, table = [], ""
    for line in _run(f"{binary}-save").splitlines():
        if line.startswith("#") or line == "COMMIT":
            continue
        line = _COUNTERS.sub("", line).strip()
        if line.startswith("*"):
            table = line[1:]
            continue
        if _BUILTIN_ACCEPT.match(line):
            continue
        lines.append(f"{table} {line}")
    return sorted(lines)


def _ipsets() -> list[str]:
    """Set names with their type (`ipset list -t`: headers, no members); none without the
    ipset tool (the kernel then holds none of ours either: kube-router needs the tool)."""
    sets, name = [], ""
    for line in _run("ipset", "list", "-t").splitlines():
        key, _, value = line.partition(":")
        if key == "Name":
            name = value.strip()
        elif key == "Type" and name:
            sets.append(f"{name} {value.strip()}")
            name = ""
    return sorted(sets)


def _cgroups() -> list[str]:
    root = Path("/sys/fs/cgroup")  # v2 at the top, v1 under each controller
    found = [*root.glob("kubepods*"), *root.glob("*/kubepods*")]
    return sorted(str(p) for p in found)


def _dir(path: str) -> list[str]:
    p = Path(path)
    return sorted(str(c) for c in p.rglob("*")) if p.is_dir() else ["<absent>"]


def _processes() -> list[str]:
    found = []
    for name in PROCESSES:
        found += [f"{name}: {line}" for line in _run("pgrep", "-a", "-x", name).splitlines()]
    # our containerd (Docker's has another config)
    found += [line for line in _run("pgrep", "-a", "containerd").splitlines() if "n1v1" in line]
    return sorted(found)


def snapshot() -> dict[str, list[str]]:
    return {
        "iptables": _iptables("iptables"),
        "ip6tables": _iptables("ip6tables"),
        "ipsets": _ipsets(),
        "links": sorted(
            line.split()[0].split("@")[0] for line in _run("ip", "-br", "link").splitlines()
        ),
        "routes": sorted(_run("ip", "route").splitlines()),
        "mounts": sorted(_run("findmnt", "-rn", "-o", "TARGET").splitlines()),
        "cgroups": _cgroups(),
        "sysctls": [f"{s}={_run('sysctl', '-n', s).strip()}" for s in SYSCTLS],
        "var_log_containers": _dir("/var/log/containers"),
        "var_lib_cni": _dir("/var/lib/cni"),
        "processes": _processes(),
    }


def differences(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = set(before.get(key, [])), set(after.get(key, []))
        out += [f"{key}: left behind: {x}" for x in sorted(a - b)]
        out += [f"{key}: missing now: {x}" for x in sorted(b - a)]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("save", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[1])
    if argv[0] == "save":
        path.write_text(json.dumps(snapshot(), indent=1))
        return 0
    diff = differences(json.loads(path.read_text()), snapshot())
    for line in diff:
        print(f"[host-state] {line}", file=sys.stderr)
    if diff:
        print(f"[host-state] the host differs from before `up` ({len(diff)} items)",
              file=sys.stderr)
        return 1
    print("[host-state] the host is as it was before `up`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
