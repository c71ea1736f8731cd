"""One-off: split the committed reports/metrics/ files into headline metrics and reports/details/ files.

Only moves fields (pipeline.headline.split_record): every file's merged record is checked equal to the
original before anything is written. Runs from the repository root: `python tools/split_committed_metrics.py`.
The per-model KPL files (reports/metrics/kpl/) are no DVC metrics and stay as they are.
"""

from __future__ import annotations

import json
import sys

from pipeline.headline import HEADLINE, merge_records, split_record
from pipeline.io import write_json
from stages import paths

KINDS = {
    "score": "score",
    "prepare": "prepare",
    "reference": "reference",
    "properties": "properties",
    "project": "project",
    "keypoints": "keypoints",
}
FILES = {paths.KPL_SUMMARY: "kpl_summary", paths.MACS_METRICS: "macs"}


def main() -> int:
    todo = dict(FILES)
    for folder, kind in KINDS.items():
        todo |= {p: kind for p in sorted((paths.REPORTS / "metrics" / folder).glob("*.json"))}
    for path, kind in todo.items():
        record = json.loads(path.read_text())
        details = paths.details(path)
        if details.exists():
            sys.exit(f"'{details}' exists already: '{path}' looks converted; restore it from git to convert again")
        head, rest = split_record(record, HEADLINE[kind])
        if merge_records(head, rest) != record:
            sys.exit(f"splitting '{path}' would change its record; nothing written for it")
        write_json(details, rest)
        write_json(path, head)
        print(f"{path}: {len(json.dumps(head))} + {len(json.dumps(rest))} characters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
