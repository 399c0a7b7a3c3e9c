"""The main loops of kernels in a CUBIN, from cuobjdump's SASS (see scripts/sass-loops.sh).

A loop is a conditional backward branch whose body (the instructions from its target to it) holds HMMA instructions;
loops that hold another such loop are left out. Its count is one steady-state iteration: the path through the body
that issues the most cp.async copies, then the most other global loads (every load of the next step), then the
most HMMA (a warp with work), then the fewest instructions. On that path a conditional forward branch is taken or
not, an unconditional one followed, `BRA.DIV` (the branch to a divergence handler) not taken, and an inner loop
without HMMA (a backward branch inside the body) run once: the table says how many such loops the path holds. A
path whose loads are LDGSTS only is a cp.async (16-byte) path; one with LDG an element-by-element one.
"""
import re
import subprocess
import sys
from collections import Counter

INSTR = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
PREDICATE = re.compile(r"^@!?U?P\w+\s+")
WORK = ("HMMA", "LDSM", "LDGSTS")


def sass(cubin, kernel):
    out = subprocess.run(["cuobjdump", "-sass", "-fun", kernel, cubin], capture_output=True, text=True)
    if out.returncode != 0 or "Function :" not in out.stdout:
        sys.exit(f"sass-loops: no kernel {kernel!r} in {cubin}: {out.stderr.strip()}")
    return [(int(m.group(1), 16), m.group(2)) for m in map(INSTR.match, out.stdout.splitlines()) if m]


def opcode(text):
    return PREDICATE.sub("", text).split()[0].split(".")[0]


def branch(text):
    """(target, conditional) of a BRA, None for anything else (BRA.DIV included: never taken here)."""
    op = PREDICATE.sub("", text).split()[0]
    if op != "BRA":
        return None
    return int(text.split("0x")[-1], 16), bool(PREDICATE.match(text))


def steady_path(body):
    """The steady-state path from the body's first instruction to its last (the back branch). The body's forward
    edges form a DAG, so the best path is found from the back branch backwards."""
    at = {a: i for i, (a, _) in enumerate(body)}
    end = body[-1][0]
    best = [None] * len(body)  # best[i]: (key, path) from instruction i on, key summed along the path
    for i in range(len(body) - 1, -1, -1):
        a, t = body[i]
        op = opcode(t)
        own = (-(op == "LDGSTS"), -(op == "LDG"), -(op == "HMMA"), 1)
        if a == end:
            best[i] = (own, [(a, t)])
            continue
        b = branch(t)
        nexts = [i + 1]
        if b and a < b[0] <= end:
            nexts = [at[b[0]], i + 1] if b[1] else [at[b[0]]]
        elif b and not b[1]:
            nexts = []  # an unconditional branch elsewhere ends no iteration
        options = [best[j] for j in nexts if best[j] is not None]
        if options:
            key, path = min(options, key=lambda o: o[0])
            best[i] = (tuple(x + y for x, y in zip(own, key)), [(a, t)] + path)
    return best[0][1] if best[0] else None


def loops(instrs):
    """(start, end, path) per innermost loop that holds HMMA instructions, with its steady-state path."""
    spans = []
    for at, text in instrs:
        b = branch(text)
        if b and b[1] and b[0] < at:
            body = [(a, t) for a, t in instrs if b[0] <= a <= at]
            if any(opcode(t) == "HMMA" for _, t in body):
                spans.append((b[0], at, body))
    for start, end, body in spans:
        if any(start <= s and e <= end and (s, e) != (start, end) for s, e, _ in spans):
            continue  # an outer loop
        path = steady_path(body)
        if path:
            yield start, end, path


def main():
    cubin, kernels = sys.argv[1], sys.argv[2:]
    rows = []
    for kernel in kernels:
        for start, end, path in loops(sass(kernel=kernel, cubin=cubin)):
            ops = Counter(opcode(t) for _, t in path)
            work = sum(ops[o] for o in WORK)
            inner = sum(1 for a, t in path[:-1] if (b := branch(t)) and b[0] <= a)
            kind = "element loads" if ops["LDG"] else "cp.async"
            rows.append(f"| {kernel} | {start:#x}–{end:#x} | {kind} | {len(path)} | {work} | {len(path) - work} | {inner} |")
    print("| kernel | loop | path | instructions | work (HMMA + LDSM + LDGSTS) | overhead | inner loops (run once) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
