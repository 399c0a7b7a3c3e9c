#!/usr/bin/env python3
"""What kind of wrong answers a model gives on BABILong qa2 ("Where is the football?"): which place it named
instead of the object's. Standard library only.

    python3 scripts/qa2-error-kinds.py RESULTS.json DATA_DIR

RESULTS.json is written by `rmt-fast babilong eval` (its predictions), DATA_DIR is the `babilong gen` directory it
read (DATA_DIR/qa2/<length>.jsonl). For each length it counts the answers by kind, the first that fits:

- right;
- holder's place now: where the object's last holder is now (it was dropped before the holder moved on);
- where picked up: the place the object was last picked up (the holder's later moves were not followed);
- latest mover's place: where the person of the story's last fact is;
- another person's place: where someone else is;
- other: a place no one is at now, or not a place.
"""
import glob
import json
import sys

TAKE = ("got", "grabbed", "picked up", "took")
DROP = ("dropped", "put down", "left", "discarded")


def kind(sample, prediction):
    """The kind of one answer, from the story's facts (qa2's templates: moves, pick-ups, drops)."""
    place, holder, picked_at = {}, {}, {}
    for fact in sample["facts"]:
        who, rest = fact.rstrip(".").split(" ", 1)
        if " to the " in rest:
            place[who] = rest.rsplit(" ", 1)[-1]
            continue
        obj = rest.removesuffix(" there").rsplit(" the ", 1)[-1]
        if rest.startswith(TAKE):
            holder[obj], picked_at[obj] = who, place.get(who)
        elif not rest.startswith(DROP):
            raise ValueError(f"not a qa2 fact: {fact!r}")
    obj = sample["question"].strip().rstrip("?").rsplit(" the ", 1)[-1]
    latest = sample["facts"][-1].split(" ", 1)[0]
    if prediction == sample["target"]:
        return "right"
    if obj in holder and prediction == place.get(holder[obj]):
        return "holder's place now"
    if prediction == picked_at.get(obj):
        return "where picked up"
    if prediction == place.get(latest):
        return "latest mover's place"
    if prediction in place.values():
        return "another person's place"
    return "other"


def main(results, data):
    samples = {}
    for path in glob.glob(f"{data}/qa2/*.jsonl"):
        for line in open(path):
            s = json.loads(line)
            samples[(s["length"], s["index"])] = s
    counts = {}
    for p in json.load(open(results))["predictions"]:
        k = kind(samples[(p["length"], p["index"])], p["prediction"].strip())
        by_kind = counts.setdefault(p["length"], {})
        by_kind[k] = by_kind.get(k, 0) + 1
    kinds = ["right", "holder's place now", "where picked up", "latest mover's place", "another person's place", "other"]
    print("| length | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")
    for length in sorted(counts):
        print(f"| {length} | " + " | ".join(str(counts[length].get(k, 0)) for k in kinds) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
