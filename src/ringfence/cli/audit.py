"""``ringfence audit``: read (and follow) the audit log."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_audit(ns: argparse.Namespace) -> int:
    import time

    from ringfence.audit import AuditLog, format_record, parse_time

    since = parse_time(ns.since) if ns.since is not None else None  # a bad TIME: exit 2
    log = AuditLog(ns.file)
    seen = 0
    while True:
        records = list(log.records(since=since))
        for record in records[seen:]:
            print(json.dumps(record, sort_keys=True) if ns.json else format_record(record))
        sys.stdout.flush()
        if not ns.follow:
            return 0
        seen = len(records)
        time.sleep(0.5)
