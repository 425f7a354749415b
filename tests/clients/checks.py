"""What every client script shares: where the server under test is, and how a
check fails (a message on stderr and a non-zero exit, which fails the Rust
test that runs the script)."""

import os
import sys

HOST = "127.0.0.1"
PORT = int(os.environ["SLUICE_PG_PORT"])
DSN = f"host={HOST} port={PORT} user=sluice dbname=sluice"


def check(what, got, want):
    if got != want:
        print(f"{what}: got {got!r}, want {want!r}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")
