#!/usr/bin/env python3
"""Accuracy by where the asked person's last fact was written, for BABILong qa1 results.

    by-fact-position.py SET.jsonl RESULT.json [RESULT.json ...]

SET.jsonl is a `babilong gen` file (its `fact_positions` are token offsets in the context); each RESULT.json a
`babilong eval` or `merge` result with predictions (those at the set's length are read). Samples are grouped by the quarter of the stream that holds the
asked person's last fact, and by whether that fact replaces an earlier one of theirs ("overwrite") or is the first
("first write"); one column per result, over the samples every result has. Prints a Markdown table.
"""
import json
import sys


def main(set_path, result_paths):
    samples = [json.loads(line) for line in open(set_path)]
    length = samples[0]["length"]
    results = [
        {p["index"]: p["correct"] for p in json.load(open(r))["predictions"] if p["length"] == length}
        for r in result_paths
    ]
    common = set.intersection(*(set(r) for r in results))
    cells = {}
    for s in samples:
        if s["index"] not in common:
            continue
        who = s["question"].split()[2].rstrip("?")  # "Where is Mary?"
        own = [i for i, f in enumerate(s["facts"]) if f.split()[0] == who]
        quarter = min(4 * s["fact_positions"][own[-1]] // s["tokens"]["context"], 3)
        key = ("overwrite" if len(own) > 1 else "first write", quarter)
        cells.setdefault(key, []).append(s["index"])
    print("| asked person's last fact | in quarter | samples | " + " | ".join(result_paths) + " |")
    print("|---|---|---|" + "---|" * len(results))
    for (kind, quarter), idx in sorted(cells.items()):
        right = [sum(r[i] for i in idx) for r in results]
        print(f"| {kind} | {quarter + 1} | {len(idx)} | " + " | ".join(str(n) for n in right) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
