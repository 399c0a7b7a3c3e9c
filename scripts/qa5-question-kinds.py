#!/usr/bin/env python3
"""How a model does on each of BABILong qa5's five question forms ("Who gave the apple to Bill?"), and what its
wrong answers name. Standard library only.

    python3 scripts/qa5-question-kinds.py RESULTS.json DATA_DIR

RESULTS.json is written by `rmt-fast babilong eval` (its predictions), DATA_DIR is the `babilong gen` directory it
read (DATA_DIR/qa5/<length>.jsonl). For each length and question form it prints right / asked, then the wrong
answers by kind, the first that fits:

- named in the question: a person or object the question itself names ("Who gave the apple to Bill?" → Bill);
- another give's: what the asked role (giver, object or receiver) is in another give of the story;
- wrong kind: an object where a person is asked, or a person where an object is asked;
- in no give: a person (or object) of the asked kind that no give of the story has in that role;
- other: a place, or not a name of the task.
"""
import glob
import json
import os
import sys

GIVE = ("gave", "handed", "passed")
PEOPLE = {"Bill", "Fred", "Jeff", "Mary"}
OBJECTS = {"apple", "football", "milk"}
# qa5's question forms: (how it begins, what must follow, its name, the role of the give it asks for)
FORMS = [
    ("What did ", " give to ", "What did G give to R?", 1),
    ("Who gave the ", " to ", "Who gave the O to R?", 0),
    ("Who gave the ", "", "Who gave the O?", 0),
    ("Who received the ", "", "Who received the O?", 2),
    ("Who did ", " give the ", "Who did G give the O to?", 2),
]
KINDS = ["named in the question", "another give's", "wrong kind", "in no give", "other"]


def form(question):
    """The index in FORMS of the question's form."""
    for i, (start, inner, _, _) in enumerate(FORMS):
        if question.startswith(start) and inner in question[len(start):]:
            return i
    raise ValueError(f"not a qa5 question: {question!r}")


def gives(facts):
    """(giver, object, receiver) of every give of the story, in order."""
    out = []
    for fact in facts:
        who, rest = fact.rstrip(".").split(" ", 1)
        for verb in GIVE:
            if rest.startswith(verb + " the "):
                obj, receiver = rest[len(verb) + 5:].split(" to ")
                out.append((who, obj, receiver))
    return out


def kind(prediction, question, role, story_gives):
    """The kind of one wrong answer."""
    if prediction in question.rstrip("? ").split():
        return KINDS[0]
    if prediction in {g[role] for g in story_gives}:
        return KINDS[1]
    if prediction in (PEOPLE if role == 1 else OBJECTS):
        return KINDS[2]
    if prediction in (OBJECTS if role == 1 else PEOPLE):
        return KINDS[3]
    return KINDS[4]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    predictions = [p for p in json.load(open(sys.argv[1]))["predictions"] if p["task"] == "qa5"]
    stories = {}
    for path in glob.glob(os.path.join(sys.argv[2], "qa5", "*.jsonl")):
        for line in open(path):
            s = json.loads(line)
            stories[(s["length"], s["index"])] = s["facts"]
    for length in sorted({p["length"] for p in predictions}):
        print(f"\n| {length} tokens | right / asked | " + " | ".join(KINDS) + " |\n|---|---|---|---|---|---|---|")
        rows = {}
        for p in (p for p in predictions if p["length"] == length):
            f = form(p["question"])
            row = rows.setdefault(f, {"right": 0, "asked": 0, **{k: 0 for k in KINDS}})
            row["asked"] += 1
            if p["correct"]:
                row["right"] += 1
            else:
                story_gives = gives(stories[(p["length"], p["index"])])
                row[kind(p["prediction"], p["question"], FORMS[f][3], story_gives)] += 1
        for f in sorted(rows):
            r = rows[f]
            print(f"| {FORMS[f][2]} | {r['right']} / {r['asked']} | " + " | ".join(str(r[k]) for k in KINDS) + " |")


if __name__ == "__main__":
    main()
