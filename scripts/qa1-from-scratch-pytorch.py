#!/usr/bin/env python3
"""An independent check of the bundled model's learning curve: the same GPT-2 shape (4 layers x 128, 4 heads,
160 learned positions), trained from scratch in PyTorch (HF transformers) on bAbI qa1 facts alone (the "0k" task,
no haystack), with the loss on the answer only and rmt-fast's optimizer settings (AdamW, weight decay 0.01,
warmup then linear decay towards 0 at twice the steps, clipping at 1.0).

Words are the tokens (bAbI has 20 of them), so the run is fast and the vocabulary is not a factor. It prints the
test accuracy every 250 steps, split by the number of facts before the question (2, 4, ... 10): whether the model
binds a person to a place at all (2 facts) or fails only at picking the person's last place (more facts).

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch transformers
    /tmp/torch/bin/python scripts/qa1-from-scratch-pytorch.py --babi ../shared/data/babi/tasks_1-20_v1-2/en-10k

With `--look-back K`, K auxiliary heads (a d x d linear map each, then the tied LM head) learn to name, at every
context position t, the token at t - k (k = 1 ... K), with weight 0.2 each. The answer loss is unchanged. These
dense targets teach the attention to look a fixed distance back, which binding a place to the person 4-5 tokens
before it needs: with them the model leaves the 50 % plateau (models/README.md).

PyTorch is never a dependency of rmt-fast; this script only reproduces findings of models/README.md.
"""
import argparse
import random
import re
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

WORDS = re.compile(r"\w+|[.?]")


def load(babi, split):
    """(facts, question, answer) for every question of qa1: the story's facts before it, in order."""
    samples, facts = [], []
    with open(f"{babi}/qa1_single-supporting-fact_{split}.txt") as f:
        for line in f:
            number, text = line.strip().split(" ", 1)
            if number == "1":
                facts = []
            if "\t" in text:
                question, answer, _ = text.split("\t")
                samples.append((" ".join(facts), question, answer))
            else:
                facts.append(text)
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--babi", required=True, help="the en-10k directory of bAbI")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--look-back", type=int, default=0, help="auxiliary heads naming the token k back, k = 1 ... K")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    train, test = load(args.babi, "train"), load(args.babi, "test")
    words = lambda s: WORDS.findall(s.lower())
    vocab = ["<pad>", "<gen>"] + sorted({w for f, q, a in train + test for w in words(f"{f} {q} {a}")})
    index = {w: i for i, w in enumerate(vocab)}

    def batch(samples):
        """Right-padded inputs (facts, question, GEN), the GEN positions and the answers."""
        seqs = [[index[w] for w in words(f"{f} {q}")] + [1] for f, q, _ in samples]
        x = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s)
        gen = torch.tensor([len(s) - 1 for s in seqs])
        return x, gen, torch.tensor([index[a] for _, _, a in samples])

    cfg = GPT2Config(vocab_size=len(vocab), n_positions=160, n_embd=128, n_layer=4, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    look_back = torch.nn.ModuleList(torch.nn.Linear(128, 128) for _ in range(args.look_back))
    params = list(model.parameters()) + list(look_back.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)

    def answer_logits(x, gen):
        # right padding after GEN cannot reach it through the causal mask
        h = model.transformer(x).last_hidden_state[torch.arange(len(x)), gen]
        return model.lm_head(h)

    def loss_of(x, gen, y):
        """The answer loss, and the look-back losses over the positions up to GEN."""
        h = model.transformer(x).last_hidden_state
        answer = torch.nn.functional.cross_entropy(model.lm_head(h[torch.arange(len(x)), gen]), y)
        total = answer
        for k, head in enumerate(look_back, 1):
            logits = model.lm_head(head(h[:, k:]))
            target = x[:, :-k].clone()
            target[torch.arange(k, x.shape[1])[None] > gen[:, None]] = -100  # padding is no target
            total = total + 0.2 * torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
        return answer, total

    held_out = test[:500]
    facts = torch.tensor([f.count(".") for f, _, _ in held_out])
    start = time.time()
    for step in range(1, args.steps + 1):
        scale = min(1.0, step / 100) * max(0.0, 1.0 - step / (2 * args.steps))
        for g in opt.param_groups:
            g["lr"] = args.lr * scale
        x, gen, y = batch(random.sample(train, args.batch))
        loss, total = loss_of(x, gen, y)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 250 == 0:
            with torch.no_grad():
                right = answer_logits(*batch(held_out)[:2]).argmax(-1) == batch(held_out)[2]
            by_facts = " ".join(f"{n} facts {right[facts == n].float().mean():.2f}" for n in sorted(set(facts.tolist())))
            print(f"step {step} loss {loss.item():.3f} test {right.float().mean():.3f} ({by_facts}) "
                  f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
