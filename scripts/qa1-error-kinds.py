#!/usr/bin/env python3
"""What kind of wrong answers a model gives on BABILong qa1: which place it named instead of the asked person's
last one. Standard library only.

    python3 scripts/qa1-error-kinds.py RESULTS.json DATA_DIR [SEGMENT]

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

A second table sorts the questions by where the answer had to come from, with segments of SEGMENT tokens (default
128, the bundled model's), and gives right / asked for each:

- in segment: the asked person's last fact is in the question's own segment;
- memory, latest: it is in an earlier segment and no fact comes after it;
- memory, later in segment: facts about others come after it, all in the question's segment;
- memory, overwritten: facts about others come after it in earlier segments too, so the memory was written again
  after it (a memory that keeps only the latest fact is at chance here).

A third table sorts them by how many tokens before the question the asked person's last fact is (< 4k, 4k–32k,
32k–128k, 128k–256k, 256k–512k, ≥ 512k): whether a long context loses recent facts too, or only distant ones.
"""
import json
import re
import sys
from collections import Counter
from pathlib import Path

FACT = re.compile(r"\b(Mary|John|Sandra|Daniel) (?:went back|went|journeyed|travelled|moved) to the (\w+)\.")
KINDS = ["correct", "latest fact", "stale", "other fact", "not in story"]
SOURCES = ["in segment", "memory, latest", "memory, later in segment", "memory, overwritten"]
DISTANCES = [
    (4096, "< 4k"),
    (32768, "4k–32k"),
    (131072, "32k–128k"),
    (262144, "128k–256k"),
    (524288, "256k–512k"),
    (None, "≥ 512k"),
]


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


def length_name(n):
    """The name `babilong gen` gives a length's file (as `babilong::eval::length_name`): 1M, 4k, 0k or 230."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def source(row, person, segment):
    """Where the answer to `row` (a `babilong gen` record) had to come from, with segments of `segment` tokens."""
    tokens = row["tokens"]
    question_segment = (tokens["context"] + tokens["question"]) // segment * segment
    facts = list(zip(row["fact_positions"], (f.split()[0] for f in row["facts"])))
    last = max(i for i, (_, who) in enumerate(facts) if who == person)
    later = [at for at, _ in facts[last + 1 :]]
    if facts[last][0] >= question_segment:
        return "in segment"
    if not later:
        return "memory, latest"
    if all(at >= question_segment for at in later):
        return "memory, later in segment"
    return "memory, overwritten"


def distance(row, person):
    """The bucket of how many tokens the asked person's last fact is before the end of the context."""
    mine = [at for at, fact in zip(row["fact_positions"], row["facts"]) if fact.split()[0] == person]
    back = row["tokens"]["context"] - max(mine)
    return next(name for limit, name in DISTANCES if limit is None or back < limit)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    results, data = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    segment = int(sys.argv[3]) if len(sys.argv) == 4 else 128
    by_length = {}
    for p in results["predictions"]:
        if p["task"] == "qa1":
            by_length.setdefault(p["length"], []).append(p)
    kinds_table, sources_table, distances_table = [], [], []
    for length, preds in sorted(by_length.items()):
        name = length_name(length)
        path = data / "qa1" / f"{name}.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        kinds, back, asked, right = Counter(), {True: [], False: []}, Counter(), Counter()
        far_asked, far_right = Counter(), Counter()
        for p in preds:
            row = rows[p["index"]]
            text = row["input"]
            facts = [(m.start(), m.group(1), m.group(2)) for m in FACT.finditer(text)]
            person = re.search(r"Where is (\w+)", p["question"]).group(1)
            k = kind(p["prediction"], person, facts)
            kinds[k] += 1
            last = [f for f in facts if f[1] == person][-1][0]
            back[k == "correct"].append((len(text) - last) / max(len(text), 1))
            where = source(row, person, segment)
            asked[where] += 1
            right[where] += k == "correct"
            far = distance(row, person)
            far_asked[far] += 1
            far_right[far] += k == "correct"
        mean = lambda xs: f"{sum(xs) / len(xs):.2f}" if xs else "–"
        cells = " | ".join(str(kinds[k]) for k in KINDS)
        kinds_table.append(f"| {name} | {len(preds)} | {cells} | {mean(back[True])} / {mean(back[False])} |")
        cells = " | ".join(f"{right[w]} / {asked[w]}" for w in SOURCES)
        sources_table.append(f"| {name} | {cells} |")
        cells = " | ".join(f"{far_right[b]} / {far_asked[b]}" if far_asked[b] else "–" for _, b in DISTANCES)
        distances_table.append(f"| {name} | {cells} |")
    print("| length | n | " + " | ".join(KINDS) + " | last fact from the end: right / wrong |")
    print("|---|---|" + "---|" * (len(KINDS) + 1))
    print("\n".join(kinds_table))
    print(f"\nright / asked, by where the answer was (segments of {segment} tokens):\n")
    print("| length | " + " | ".join(SOURCES) + " |")
    print("|---|" + "---|" * len(SOURCES))
    print("\n".join(sources_table))
    print("\nright / asked, by how far before the question the answer was (tokens):\n")
    print("| length | " + " | ".join(b for _, b in DISTANCES) + " |")
    print("|---|" + "---|" * len(DISTANCES))
    print("\n".join(distances_table))


if __name__ == "__main__":
    main()
