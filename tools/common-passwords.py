#!/usr/bin/env python3
"""Builds crates/core/data/common-passwords.bin, the common-password filter
healthgate ships in its binary (crates/core/src/common_passwords.rs).

Source: the list of the 20,000 most common passwords from breach data that
Royce Williams compiled and Django ships as
django/contrib/auth/common-passwords.txt.gz (Django is BSD-3-Clause; 5.2 has
19,640 entries). To regenerate, fetch the wheel and run this script on it:

    pip download 'django==5.2.*' --no-deps -d /tmp/dj
    cd /tmp/dj && unzip -o django-5.2.*.whl django/contrib/auth/common-passwords.txt.gz
    python3 tools/common-passwords.py /tmp/dj/django/contrib/auth/common-passwords.txt.gz

`--check` compares instead of writing (exit status 1 when the committed file
differs). The raw list is not committed.

Each entry a password could equal under healthgate's rule (at least 8
characters) is lowercased, hashed with SHA-256, and kept as the first four
bytes of the digest (a big-endian 32-bit fingerprint); the file is the sorted,
deduplicated fingerprints, four bytes each, nothing else. A password is
looked up the same way, so every listed entry is found, in any case; a
password not on the list is taken for one with a chance of about
count / 2^32 (under 1 in 500,000). Standard library only.
"""

import argparse
import gzip
import hashlib
import pathlib
import sys

MIN_PASSWORD_CHARS = 8  # core::user::MIN_PASSWORD_CHARS
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/core/data/common-passwords.bin"


def read_list(path: pathlib.Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]  # as Django reads it


def fingerprint(password: str) -> int:
    digest = hashlib.sha256(password.lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def build(entries: list[str]) -> bytes:
    # Entries are compared lowercased; lowercasing never shortens a string
    # here, so an entry shorter than the minimum matches no allowed password.
    kept = [e for e in entries if len(e.lower()) >= MIN_PASSWORD_CHARS]
    prints = sorted({fingerprint(e) for e in kept})
    print(
        f"{len(entries)} entries, {len(kept)} of at least {MIN_PASSWORD_CHARS} characters, "
        f"{len(prints)} fingerprints ({len(prints) * 4} bytes)",
        file=sys.stderr,
    )
    return b"".join(p.to_bytes(4, "big") for p in prints)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("list", type=pathlib.Path, help="common-passwords.txt.gz (or .txt)")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args()
    data = build(read_list(args.list))
    if args.check:
        if args.out.read_bytes() != data:
            print(f"{args.out} differs from the list; regenerate it", file=sys.stderr)
            return 1
        print(f"{args.out} matches the list", file=sys.stderr)
        return 0
    args.out.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
