"""The main loops of kernels in a CUBIN, from cuobjdump's SASS (see scripts/sass-loops.sh).

A loop is a backward branch whose body holds HMMA instructions; its count is one steady-state iteration's path
through the body (see `loops`). A path whose loads are LDGSTS only is a cp.async (16-byte) path; one with LDG the
element-by-element one. The loop must be laid out contiguously, as the matmul kernels' are; ptxas scatters
attention's across the function, so it is not counted here.
"""
import re
import subprocess
import sys
from collections import Counter

INSTR = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
BRANCH = re.compile(r"(@!?P\w+\s+)?BRA\s+(?:`\()?(?:\.L_x_\d+\)?)?\s*0x([0-9a-f]+)")
WORK = ("HMMA", "LDSM", "LDGSTS")


def sass(cubin, kernel):
    out = subprocess.run(["cuobjdump", "-sass", "-fun", kernel, cubin], capture_output=True, text=True, check=True)
    return [(int(m.group(1), 16), m.group(2)) for m in map(INSTR.match, out.stdout.splitlines()) if m]


def opcode(text):
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def steady_path(body, end):
    """The path of a steady-state iteration from the loop's start to its back branch: the one that issues the most
    cp.async copies, then the most other global loads (every load of the next step), then the fewest instructions.
    A conditional forward branch inside the body is taken or not, an unconditional one followed; the body's
    forward edges form a DAG, so the best path is found from the back branch backwards."""
    at = {a: i for i, (a, _) in enumerate(body)}
    best = [None] * len(body)  # best[i]: (key, path) from instruction i on
    for i in range(len(body) - 1, -1, -1):
        a, t = body[i]
        own = (-(opcode(t) == "LDGSTS"), -(opcode(t) == "LDG"), 1)
        if a == end:
            best[i] = (own, [t])
            continue
        b = BRANCH.search(t)
        target = int(b.group(2), 16) if b else None
        nexts = []
        if target is not None and a < target <= end:
            nexts.append(at[target])
            if b.group(1):
                nexts.append(i + 1)
        elif target is None or b.group(1):
            nexts.append(i + 1)  # an unconditional branch out of the loop ends no iteration: no successor
        options = [best[j] for j in nexts if best[j] is not None]
        if options:
            key, path = min(options, key=lambda o: o[0])
            best[i] = (tuple(x + y for x, y in zip(own, key)), [t] + path)
    return best[0][1] if best[0] else None


def loops(instrs):
    """(start, end, path) per innermost loop that holds HMMA instructions, with its steady-state path."""
    spans = []
    for at, text in instrs:
        m = BRANCH.search(text)
        if m and int(m.group(2), 16) < at:
            body = [(a, t) for a, t in instrs if int(m.group(2), 16) <= a <= at]
            if any(opcode(t) == "HMMA" for _, t in body):
                spans.append((int(m.group(2), 16), at, body))
    for start, end, body in spans:
        if any(start <= s2 and e2 <= end and (s2, e2) != (start, end) for s2, e2, _ in spans):
            continue  # an outer loop
        path = steady_path(body, end)
        if path:
            yield start, end, path


def main():
    cubin, kernels = sys.argv[1], sys.argv[2:]
    print("| kernel | loop | path | instructions | work (HMMA + LDSM + LDGSTS) | overhead |")
    print("|---|---|---|---|---|---|")
    for kernel in kernels:
        for start, end, path in loops(sass(cubin, kernel)):
            ops = Counter(opcode(t) for t in path)
            work = sum(ops[o] for o in WORK)
            kind = "element loads" if ops["LDG"] else "cp.async"
            print(f"| {kernel} | {start:#x}–{end:#x} | {kind} | {len(path)} | {work} | {len(path) - work} |")


if __name__ == "__main__":
    main()
