#!/usr/bin/env python3
"""What kind of wrong answers a model gives on BABILong qa1: which place it named instead of the asked person's
last one. Standard library only.

    python3 scripts/qa1-error-kinds.py RESULTS.json DATA_DIR

RESULTS.json is written by `rmt-fast babilong eval` (its predictions), DATA_DIR is the `babilong gen` directory it
read (DATA_DIR/qa1/<length>.jsonl). For each length it prints the answers by kind:

- correct;
- latest fact: the place of the last fact in the whole context, about someone else (the memory kept "the latest
  place", not who went there);
- stale: an earlier place of the asked person;
- other fact: a place of another fact;
- not in story: a place that no fact names;

and the mean position of the asked person's last fact, as a fraction of the context from its end, for right and
wrong answers (how far back the answer was).
"""
import json
import re
import sys
from collections import Counter
from pathlib import Path

FACT = re.compile(r"\b(Mary|John|Sandra|Daniel) (?:went back|went|journeyed|travelled|moved) to the (\w+)\.")
KINDS = ["correct", "latest fact", "stale", "other fact", "not in story"]


def kind(prediction, person, facts):
    """The kind of one answer, given the context's facts as (offset, person, place) in order."""
    mine = [f for f in facts if f[1] == person]
    if prediction == mine[-1][2]:
        return "correct"
    if prediction == facts[-1][2]:
        return "latest fact"
    if prediction in [f[2] for f in mine[:-1]]:
        return "stale"
    if prediction in [f[2] for f in facts]:
        return "other fact"
    return "not in story"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results, data = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    by_length = {}
    for p in results["predictions"]:
        if p["task"] == "qa1":
            by_length.setdefault(p["length"], []).append(p)
    print("| length | n | " + " | ".join(KINDS) + " | last fact from the end: right / wrong |")
    print("|---|---|" + "---|" * (len(KINDS) + 1))
    for length, preds in sorted(by_length.items()):
        name = f"{length // 1000}k" if length < 1_000_000 else f"{length // 1_000_000}M"
        path = data / "qa1" / f"{name}.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        kinds, back = Counter(), {True: [], False: []}
        for p in preds:
            text = rows[p["index"]]["input"]
            facts = [(m.start(), m.group(1), m.group(2)) for m in FACT.finditer(text)]
            person = re.search(r"Where is (\w+)", p["question"]).group(1)
            k = kind(p["prediction"], person, facts)
            kinds[k] += 1
            last = [f for f in facts if f[1] == person][-1][0]
            back[k == "correct"].append((len(text) - last) / max(len(text), 1))
        mean = lambda xs: f"{sum(xs) / len(xs):.2f}" if xs else "–"
        cells = " | ".join(str(kinds[k]) for k in KINDS)
        print(f"| {name} | {len(preds)} | {cells} | {mean(back[True])} / {mean(back[False])} |")


if __name__ == "__main__":
    main()
