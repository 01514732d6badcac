#!/usr/bin/env python3
"""Print the host's Debian bookworm apt sources as one-line ``sources.list`` entries.

The local base image (scripts/build_base_image.sh) must fetch packages from the same mirror
the host's apt already uses, without this repository naming any host: this reads
``/etc/apt/sources.list`` and ``/etc/apt/sources.list.d/*.{list,sources}`` and keeps the
entries for Debian's own archive (suites ``bookworm``, ``bookworm-updates``,
``bookworm-security``; third-party repositories are skipped). With ``--mirror`` it prints
only the URI serving the ``bookworm`` suite itself (what debootstrap needs).
Falls back to deb.debian.org when the host has no Debian entries (e.g. an Ubuntu host).
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

SUITE = "bookworm"
FALLBACK = [
    ("http://deb.debian.org/debian", SUITE, "main"),
    ("http://deb.debian.org/debian", f"{SUITE}-updates", "main"),
    ("http://deb.debian.org/debian-security", f"{SUITE}-security", "main"),
]


def _one_line(text: str) -> list[tuple[str, str, str]]:
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 4 or parts[0] != "deb":
            continue
        parts = [p for p in parts[1:] if not p.startswith("[")]
        out.append((parts[0], parts[1], " ".join(parts[2:])))
    return out


def _deb822(text: str) -> list[tuple[str, str, str]]:
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append((uri, suite, fields.get("components", "main")))
    return out


def debian_entries() -> list[tuple[str, str, str]]:
    entries = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
        p = Path(path)
        if not p.is_file():
            continue
        text = p.read_text(errors="replace")
        entries += _deb822(text) if path.endswith(".sources") else _one_line(text)
    keep = [
        (uri.rstrip("/"), suite, "main")
        for uri, suite, components in entries
        if suite in {SUITE, f"{SUITE}-updates", f"{SUITE}-security"}
        and "main" in components.split()
    ]
    return keep or FALLBACK


def main() -> None:
    entries = debian_entries()
    if sys.argv[1:] == ["--mirror"]:
        print(next(uri for uri, suite, _ in entries if suite == SUITE))
        return
    for uri, suite, components in entries:
        print(f"deb {uri} {suite} {components}")


if __name__ == "__main__":
    main()
