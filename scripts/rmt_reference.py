#!/usr/bin/env python3
"""PyTorch reference for rmt-fast: HF `transformers` GPT-2 + an RMT / RMT-R wrapper written from
../shared/docs/RMT-SPEC.md (§1.4-1.7 RMT, §2.2-2.3 RMT-R v1/v2), and ARMT's associative memory as hooks around
each GPT-2 block (§3.1, as the authors' AssociativeLayerWrapper wraps them).

It is the oracle the Rust engine is tested against, and the PyTorch baseline it is benchmarked against.
PyTorch is never a runtime or CI dependency of rmt-fast.

    fixtures  write tiny random models and their expected outputs to tests/fixtures/ (safetensors)
    bench     time the RMT segment loop (GPT-2 small shape, random weights) on CPU or CUDA

Fixture command (the committed fixtures were made with exactly this; the ARMT ones, added later, with
`--only armt`, torch 2.15.0 and transformers 5.24.0; `armt_decay.*`, added last, with `--only armt-decay`):
    python3 scripts/rmt_reference.py fixtures --out tests/fixtures
"""
import argparse
import json
import math
import os
import sys
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import ACT2FN


def gpt2_config(cfg, attn="eager"):
    c = GPT2Config(
        vocab_size=cfg["vocab_size"], n_positions=cfg["n_positions"], n_embd=cfg["n_embd"],
        n_layer=cfg["n_layer"], n_head=cfg["n_head"], layer_norm_epsilon=cfg["layer_norm_epsilon"],
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=cfg["eos_token_id"], eos_token_id=cfg["eos_token_id"],
        tie_word_embeddings=cfg.get("tie_word_embeddings", True),
    )
    c._attn_implementation = attn
    return c


class Retrieval(nn.Module):
    """Cross-attention from the current memory M_t to all stored memory states (RMT-SPEC §2.3)."""

    def __init__(self, d, version):
        super().__init__()
        self.version, self.d = version, d
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.o_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.act = ACT2FN["gelu_new"]
        if version == "v2":
            self.ln_q, self.ln_kv, self.ln_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
            self.fc_1, self.fc_2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, past, cur):  # past: list of [B,m,d]; cur: [B,m,d]
        H = torch.cat(past, dim=1)
        if self.version == "v1":
            q, k, v = self.act(self.q_proj(cur)), self.act(self.k_proj(H)), self.act(self.v_proj(H))
            a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.d), dim=-1)
            return self.act(self.o_proj(a @ v))
        H = self.ln_kv(H)
        q, k, v = self.q_proj(self.ln_q(cur)), self.k_proj(H), self.v_proj(H)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.d), dim=-1)
        r = self.o_proj(a @ v) + cur
        return r + self.fc_2(self.act(self.fc_1(self.ln_mlp(r))))


class RMT(nn.Module):
    """RMT (kind 'rmt') or RMT-R (kind 'rmt-r') around HF GPT2LMHeadModel, as in the authors' MemoryCell."""

    def __init__(self, cfg, attn="eager"):
        super().__init__()
        self.cfg = cfg
        mem = cfg["memory"]
        self.kind, self.m, self.seg = mem["kind"], mem["num_mem_tokens"], mem["segment_size"]
        self.gpt2 = GPT2LMHeadModel(gpt2_config(cfg, attn))
        wte = self.gpt2.transformer.wte.weight
        read_rows = self.m if self.kind == "rmt" else 2 * self.m
        self.memory = nn.Parameter(torch.randn(read_rows, cfg["n_embd"]) * wte.std())
        self.retrieval = Retrieval(cfg["n_embd"], mem["retrieval"]) if self.kind == "rmt-r" else None

    # -- the recurrence ------------------------------------------------------------------------------
    def embed(self, tokens):
        return self.gpt2.transformer.wte(tokens)

    def write_segment(self, read, tokens, write):
        """One segment [read | tokens | write]; new memory = ln_f output at the write rows (§1.5)."""
        x = torch.cat([read, self.embed(tokens), write], dim=1)
        out = self.gpt2.transformer(inputs_embeds=x, output_hidden_states=True)
        return out.hidden_states[-1][:, -self.m:]

    def blocks(self, state, B):
        """(read, write) blocks for the next segment, given the recurrent state."""
        if self.kind == "rmt":
            mem = state["M"] if state["M"] is not None else self.memory.expand(B, -1, -1)
            return mem, mem
        if state["M"] is None:
            mem = self.memory.expand(B, -1, -1)
            return mem, mem[:, : self.m]
        M = state["M"]
        R = self.retrieval(state["store"], M)
        return torch.cat([M, R], dim=1), M

    def step(self, state, tokens):
        read, write = self.blocks(state, tokens.shape[0])
        M = self.write_segment(read, tokens, write)
        state["M"] = M
        state["store"].append(M)
        return M

    def new_state(self):
        return {"M": None, "store": []}

    def train_memories(self, tokens):
        """Training-mode forward (§1.11): every segment, the partial last one too, writes memory."""
        st, mems = self.new_state(), []
        for s in range(0, tokens.shape[1], self.seg):
            mems.append(self.step(st, tokens[:, s:s + self.seg]))
        return torch.stack(mems, 1)

    def generate(self, prompt, max_new, eos):
        """Left-aligned split; all but the last segment write memory; the last runs [read | seg] without
        write memory, then greedy decoding with the KV cache (§1.7). Returns memories, per-step logits, tokens."""
        st, mems = self.new_state(), []
        starts = list(range(0, prompt.shape[1], self.seg))
        for s in starts[:-1]:
            mems.append(self.step(st, prompt[:, s:s + self.seg]))
        read, _ = self.blocks(st, prompt.shape[0])
        x = torch.cat([read, self.embed(prompt[:, starts[-1]:])], dim=1)
        out = self.gpt2(inputs_embeds=x, use_cache=True)
        past, pos, logits, toks = out.past_key_values, x.shape[1], [], []
        for _ in range(max_new):
            row = out.logits[:, -1].float()
            logits.append(row)
            t = int(row.argmax(-1))
            toks.append(t)
            if t == eos or len(toks) == max_new:
                break
            ids = torch.tensor([[t]])
            out = self.gpt2(input_ids=ids, past_key_values=past, use_cache=True,
                            position_ids=torch.tensor([[pos]]))
            past, pos = out.past_key_values, pos + 1
        mems = torch.stack(mems, 1) if mems else torch.zeros(1, 0, self.m, self.cfg["n_embd"])
        return mems, torch.stack(logits, 1), toks

    # -- our safetensors model file (ENGINEERING.md §3.1) ---------------------------------------------
    def tensors(self):
        t = {k: v for k, v in self.gpt2.transformer.state_dict().items()
             if not (k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"))}
        if not self.cfg.get("tie_word_embeddings", True):
            t["lm_head.weight"] = self.gpt2.lm_head.weight
        t["memory"] = self.memory
        if self.retrieval is not None:
            for k, v in self.retrieval.state_dict().items():
                t["retrieval." + k] = v
        return {k: v.detach().contiguous().clone() for k, v in t.items()}


def dpfp(x, nu=3):
    """ARMT's key map (RMT-SPEC §3.1): [relu(x), relu(-x)], then its products with its rolls by 1..nu."""
    x = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    return torch.cat([x * x.roll(shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)


class ARMT(nn.Module):
    """ARMT (RMT-SPEC §3.1) around HF GPT2LMHeadModel: before each block every row reads the layer's associative
    state, after it the segment's memory rows (the learned `memory`, appended after the tokens) update the state
    with the delta rule. The question segment and decoding only read (the authors' generate mode)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        mem, d = cfg["memory"], cfg["n_embd"]
        self.m, self.seg, dm = mem["num_mem_tokens"], mem["segment_size"], mem["d_mem"]
        self.gpt2 = GPT2LMHeadModel(gpt2_config(cfg))
        self.memory = nn.Parameter(torch.randn(self.m, d) * self.gpt2.transformer.wte.weight.std())
        layers = range(cfg["n_layer"])
        self.W_mq = nn.ModuleList(nn.Linear(d, dm, bias=False) for _ in layers)
        self.W_mk = nn.ModuleList(nn.Linear(d, dm, bias=False) for _ in layers)
        self.W_mv = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in layers)
        self.W_mb = nn.ModuleList(nn.Linear(d, 1) for _ in layers)
        for w in self.W_mv:
            nn.init.zeros_(w.weight)
        self.state, self.writing, self.max_gain = None, False, 1.0
        for l, block in enumerate(self.gpt2.transformer.h):
            block.register_forward_pre_hook(partial(self._read, l), with_kwargs=True)
            block.register_forward_hook(partial(self._write, l))

    def new_state(self, B=1):
        d, dk, dt = self.cfg["n_embd"], 6 * self.cfg["memory"]["d_mem"], self.memory.dtype
        return [(torch.zeros(B, dk, d, dtype=dt), torch.zeros(B, dk, dtype=dt)) for _ in range(self.cfg["n_layer"])]

    def _read(self, l, module, args, kwargs):
        A, z = self.state[l]
        h = args[0] if args else kwargs["hidden_states"]
        q = dpfp(self.W_mq[l](h))
        h = h + (q @ A) / ((q * z[:, None]).sum(-1, keepdim=True) + 1e-5)
        if args:
            return (h,) + tuple(args[1:]), kwargs
        return args, dict(kwargs, hidden_states=h)

    def _write(self, l, module, args, output):
        if not self.writing:
            return None
        h = output[0] if isinstance(output, tuple) else output
        M = h[:, -self.m:]
        A, z = self.state[l]
        # rmt-fast's decay (not the authors'): the write sees the state scaled by lambda
        decay = self.cfg["memory"].get("decay", 1.0)
        A, z = A * decay, z * decay
        k, v, beta = dpfp(self.W_mk[l](M)), self.W_mv[l](M), torch.sigmoid(self.W_mb[l](M))
        kz = (k * z[:, None]).sum(-1, keepdim=True)
        v_old = (k @ A) / (kz + 1e-5)
        coverage = kz / ((k * k).sum(-1, keepdim=True) + 1e-5)
        gamma = (1 - coverage).clamp(0, 1).detach()
        if self.cfg["memory"].get("write", "delta") == "replacing":
            # rmt-fast's replacing write (not the authors'): the gain s = max(1, k.z / |k|^2), detached
            beta = coverage.clamp(min=1).detach() * beta
            self.max_gain = max(self.max_gain, coverage.max().item())
        A = A + torch.einsum("ijk,ijt,ij->ikt", k, v - v_old, beta[..., 0])
        z = z + (gamma * k).sum(1)
        self.state[l] = (A, z)
        return None

    def segment(self, tokens, write):
        """One segment: `[tokens | memory]` updating the state (write) or `tokens` alone; ln_f of the token rows."""
        x = self.gpt2.transformer.wte(tokens)
        if write:
            x = torch.cat([x, self.memory.expand(tokens.shape[0], -1, -1)], dim=1)
        self.writing = write
        h = self.gpt2.transformer(inputs_embeds=x).last_hidden_state
        self.writing = False
        return h[:, : tokens.shape[1]]

    def generate(self, prompt, max_new, eos):
        """Left-aligned split: all but the last segment write; the last only reads, then greedy decoding with the
        KV cache. Returns the per-step logits and the tokens."""
        self.state = self.new_state(prompt.shape[0])
        starts = list(range(0, prompt.shape[1], self.seg))
        for s in starts[:-1]:
            self.segment(prompt[:, s:s + self.seg], True)
        out = self.gpt2(input_ids=prompt[:, starts[-1]:], use_cache=True)
        past, pos, logits, toks = out.past_key_values, prompt.shape[1] - starts[-1], [], []
        for _ in range(max_new):
            row = out.logits[:, -1]
            logits.append(row)
            t = int(row.argmax(-1))
            toks.append(t)
            if t == eos or len(toks) == max_new:
                break
            out = self.gpt2(input_ids=torch.tensor([[t]]), past_key_values=past, use_cache=True,
                            position_ids=torch.tensor([[pos]]))
            past, pos = out.past_key_values, pos + 1
        return torch.stack(logits, 1), toks

    def training_loss(self, prompt, answer):
        """As RMT's (CE over GEN -> answer -> EOS), with ARMT's segments: all but the last write, full BPTT."""
        tokens = torch.tensor([prompt + answer + [self.cfg["eos_token_id"]]])
        self.state = self.new_state()
        starts = list(range(0, tokens.shape[1], self.seg))
        h = torch.cat([self.segment(tokens[:, s:s + self.seg], s != starts[-1]) for s in starts], dim=1)
        logits = self.gpt2.lm_head(h)[0]
        first = len(prompt) - 1
        return F.cross_entropy(logits[first:-1], tokens[0, first + 1:])

    def tensors(self):
        t = {k: v for k, v in self.gpt2.transformer.state_dict().items()
             if not (k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"))}
        t["memory"] = self.memory
        for l in range(self.cfg["n_layer"]):
            for name in ["W_mq", "W_mk", "W_mv", "W_mb"]:
                for k, v in getattr(self, name)[l].state_dict().items():
                    t[f"h.{l}.{name}.{k}"] = v
        return {k: v.detach().contiguous().clone() for k, v in t.items()}

    def parameter(self, name):
        """The parameter stored under `name` in our model file."""
        if name == "memory":
            return self.memory
        if name.startswith("h.") and name.split(".")[2].startswith("W_m"):
            _, l, attr, k = name.split(".")
            return getattr(getattr(self, attr)[int(l)], k)
        return dict(self.gpt2.transformer.named_parameters())[name]


def armt_fixture(out, write="delta", decay=None):
    """A tiny ARMT: greedy answers of prompts of one partial to five segments (inference parity), and one
    4-segment sample's loss and gradients (three writes, so the detached γ of later writes matters). `write`:
    the authors' rule (`armt.*`) or rmt-fast's replacing write (`armt_replacing.*`, the same weights); `decay`:
    the authors' rule with rmt-fast's decay λ (`armt_decay.*`, the same weights).

    ARMT can be ill-conditioned: a query that meets keys the state has barely seen divides by ≈ ε = 1e-5, and the
    delta rule subtracts nearly equal values. So the expected values are computed in float64, and next to each
    the error of PyTorch's own float32 run against them (`*.torch_f32_err`, normalised; the largest over that run
    and four on weights one ulp away): a float32 engine is held to a bound that grows with
    it, not to a bound no float32 implementation could meet."""
    torch.manual_seed(91)
    cfg = dict(TINY, memory=dict(kind="armt", num_mem_tokens=4, segment_size=16, d_mem=4))
    if write != "delta":
        cfg["memory"]["write"] = write
    if decay is not None:
        cfg["memory"]["decay"] = decay
    name = "armt_decay" if decay is not None else "armt" if write == "delta" else f"armt_{write}"
    model = ARMT(cfg).eval()
    perturb(model)
    exact = ARMT(cfg).double().eval()
    exact.load_state_dict(model.state_dict())
    err = lambda a, b: ((a.double() - b).norm() / b.norm()).reshape(1)
    # PyTorch's float32 error is one draw of the rounding noise, which for an ill-conditioned value (W_mq of layer 1
    # here) spreads over an order of magnitude: take the largest of its float32 run on these weights and of four
    # runs on weights moved by at most one ulp each (a change as small as float32 rounding itself).
    runs = [model] + [ulp_neighbour(model, cfg, seed) for seed in range(1, 5)]
    g = torch.Generator().manual_seed(92)
    expected = {}
    for i, n in enumerate(PROMPT_LENGTHS):
        ctx = torch.randint(0, cfg["gen_token_id"], (1, n - 1), generator=g)
        prompt = torch.cat([ctx, torch.tensor([[cfg["gen_token_id"]]])], dim=1)
        with torch.no_grad():
            logits, toks = exact.generate(prompt, MAX_NEW, cfg["eos_token_id"])
            answers32 = [m.generate(prompt, MAX_NEW, cfg["eos_token_id"]) for m in runs]
        assert all(t32 == toks for _, t32 in answers32), f"case {i}: float32 and float64 answers differ"
        expected[f"case{i}.prompt"] = prompt[0].to(torch.int64)
        expected[f"case{i}.logits"] = logits[0].float()
        expected[f"case{i}.logits.torch_f32_err"] = max(err(l32[0], logits[0]) for l32, _ in answers32).float()
        expected[f"case{i}.tokens"] = torch.tensor(toks, dtype=torch.int64)
    prompt = torch.randint(0, cfg["gen_token_id"], (52,), generator=g).tolist() + [cfg["gen_token_id"]]
    answer = [17, 3, 55]
    loss = exact.training_loss(prompt, answer)
    loss.backward()
    losses32 = [m.training_loss(prompt, answer) for m in runs]
    for l32 in losses32:
        l32.backward()
    loss_err = max(err(l32.detach(), loss.detach()) for l32 in losses32)
    expected.update({"loss": loss.detach().float().reshape(1), "prompt": torch.tensor(prompt),
                     "answer": torch.tensor(answer), "loss.torch_f32_err": loss_err.float()})
    for k in model.tensors():
        want = exact.parameter(k).grad.detach()
        expected["grad." + k] = want.float().clone()
        expected[f"grad.{k}.torch_f32_err"] = max(err(m.parameter(k).grad.detach(), want) for m in runs).float()
    save_model(model, f"{out}/{name}.safetensors")
    save_file(expected, f"{out}/{name}.expected.safetensors")
    worst = max(v.item() for k, v in expected.items() if k.endswith("torch_f32_err"))
    print(f"wrote {out}/{name}.* (loss {loss.item():.6f}; PyTorch float32 against float64: at most {worst:.2e}; "
          f"largest write gain {exact.max_gain:.3g})")


def ulp_neighbour(model, cfg, seed):
    """A float32 copy of the ARMT `model` with every weight moved by −1, 0 or +1 ulp (relative 2⁻²³), at random."""
    g = torch.Generator().manual_seed(seed)
    moved = {k: v * (1 + 2.0 ** -23 * torch.randint(-1, 2, v.shape, generator=g).float()) if v.is_floating_point()
             else v for k, v in model.state_dict().items()}
    neighbour = ARMT(cfg).eval()
    neighbour.load_state_dict(moved)
    return neighbour


def file_config(cfg):
    keys = ["n_layer", "n_head", "n_embd", "vocab_size", "n_positions", "layer_norm_epsilon",
            "memory", "eos_token_id", "gen_token_id"]
    return {k: cfg[k] for k in keys}


def save_model(model, path, dtype=torch.float32):
    t = {k: v.to(dtype) for k, v in model.tensors().items()}
    save_file(t, path, metadata={"config": json.dumps(file_config(model.cfg))})


# -- fixtures ---------------------------------------------------------------------------------------
TINY = dict(n_layer=2, n_head=4, n_embd=32, vocab_size=96, n_positions=64, layer_norm_epsilon=1e-5,
            eos_token_id=95, gen_token_id=94)
# Prompt lengths (GEN included) over segment_size 16: one partial segment, exactly one, 2 full + a partial,
# exactly 4, 4 full + a partial.
PROMPT_LENGTHS = [9, 16, 37, 64, 75]
# the decay of the `armt_decay` fixture: strong, so that four segments show it
DECAY = 0.75
MAX_NEW = 10


def fixture_models():
    rmt = dict(TINY, memory=dict(kind="rmt", num_mem_tokens=4, segment_size=16))
    return {
        "rmt": rmt,
        "rmt_r_v1": dict(TINY, memory=dict(kind="rmt-r", num_mem_tokens=4, segment_size=16, retrieval="v1")),
        # v2 also covers an untied lm_head
        "rmt_r_v2": dict(TINY, tie_word_embeddings=False,
                         memory=dict(kind="rmt-r", num_mem_tokens=4, segment_size=16, retrieval="v2")),
    }


def perturb(model, scale=0.1):
    """HF init leaves biases at 0 and LayerNorms at 1/0 with small weights: a bug in bias or LayerNorm handling
    would go unseen and nonlinearities stay near-linear. Fixtures add noise to every parameter."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def expected_outputs(model, seed):
    g = torch.Generator().manual_seed(seed)
    cfg, out = model.cfg, {}
    for i, n in enumerate(PROMPT_LENGTHS):
        ctx = torch.randint(0, cfg["gen_token_id"], (1, n - 1), generator=g)
        prompt = torch.cat([ctx, torch.tensor([[cfg["gen_token_id"]]])], dim=1)
        with torch.no_grad():
            mems, logits, toks = model.generate(prompt, MAX_NEW, cfg["eos_token_id"])
            train = model.train_memories(prompt)
        out[f"case{i}.prompt"] = prompt[0].to(torch.int64)
        out[f"case{i}.memories"] = mems[0]
        out[f"case{i}.train_memories"] = train[0]
        out[f"case{i}.logits"] = logits[0]
        out[f"case{i}.tokens"] = torch.tensor(toks, dtype=torch.int64)
    return out


def cmd_fixtures(args):
    os.makedirs(args.out, exist_ok=True)
    if args.only == "armt":
        armt_fixture(args.out)
        armt_fixture(args.out, "replacing")
        armt_fixture(args.out, decay=DECAY)
        return
    if args.only == "armt-decay":
        armt_fixture(args.out, decay=DECAY)
        return
    for seed, (name, cfg) in enumerate(fixture_models().items()):
        torch.manual_seed(1000 + seed)
        model = RMT(cfg).eval()
        perturb(model)
        save_model(model, f"{args.out}/{name}.safetensors")
        save_file(expected_outputs(model, 7 + seed), f"{args.out}/{name}.expected.safetensors")
        if name == "rmt":
            # The same model stored in bf16; the reference runs it with the bf16-rounded weights in f32.
            save_model(model, f"{args.out}/rmt_bf16.safetensors", torch.bfloat16)
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).float())
            save_file(expected_outputs(model, 7 + seed), f"{args.out}/rmt_bf16.expected.safetensors")
        print(f"wrote {args.out}/{name}.*")
    checkpoint_fixture(args.out)
    gradient_fixture(args.out)
    armt_fixture(args.out)
    armt_fixture(args.out, "replacing")
    armt_fixture(args.out, decay=DECAY)
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")


def authors_state_dict(model):
    """The state dict as the authors' RecurrentWrapper(MemoryCell(GPT2LMHeadModel)) saves it (RMT-SPEC §6)."""
    sd = {"memory_cell.memory": model.memory}
    for k, v in model.gpt2.state_dict().items():
        sd["memory_cell.model." + k] = v
    return {k: v.detach().clone() for k, v in sd.items()}


def checkpoint_fixture(out):
    """A PyTorch-saved bf16 checkpoint with the authors' key names (and a duplicated lm_head, as the public
    326 MB files have), plus the outputs of its bf16-rounded weights, for `rmt-fast convert`."""
    torch.manual_seed(2024)
    cfg = fixture_models()["rmt"]
    model = RMT(cfg).eval()
    perturb(model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    sd = {k: v.to(torch.bfloat16) for k, v in authors_state_dict(model).items()}
    torch.save(sd, f"{out}/authors_rmt_bf16.pytorch_model.bin")
    save_file(expected_outputs(model, 99), f"{out}/authors_rmt_bf16.expected.safetensors")
    with open(f"{out}/authors_rmt_bf16.config.json", "w") as f:
        json.dump(file_config(cfg), f, indent=1)
    print(f"wrote {out}/authors_rmt_bf16.* ({len(sd)} tensors)")


def training_loss(model, prompt, answer):
    """The authors' training objective (RMT-SPEC §1.5-1.6, §1.11): every segment, the partial last one too, runs
    [mem | segment | mem] with write memory and full BPTT; CE over GEN -> answer tokens -> EOS, mean over them."""
    eos = model.cfg["eos_token_id"]
    tokens = torch.tensor([prompt + answer + [eos]])
    st, logits = model.new_state(), []
    for s in range(0, tokens.shape[1], model.seg):
        seg = tokens[:, s:s + model.seg]
        read, write = model.blocks(st, 1)
        x = torch.cat([read, model.embed(seg), write], dim=1)
        h = model.gpt2.transformer(inputs_embeds=x).last_hidden_state   # ln_f applied
        st["M"] = h[:, -model.m:]
        logits.append(model.gpt2.lm_head(h[:, model.m:-model.m]))
    logits = torch.cat(logits, dim=1)[0]
    first = len(prompt) - 1
    return F.cross_entropy(logits[first:-1], tokens[0, first + 1:])


def gradient_fixture(out):
    """A tiny RMT, one 3-segment sample, its loss and the gradient of every parameter (our tensor names)."""
    torch.manual_seed(77)
    cfg = fixture_models()["rmt"]
    model = RMT(cfg).eval()
    perturb(model)
    g = torch.Generator().manual_seed(78)
    prompt = torch.randint(0, cfg["gen_token_id"], (36,), generator=g).tolist() + [cfg["gen_token_id"]]
    answer = [17, 3, 55]
    loss = training_loss(model, prompt, answer)
    loss.backward()
    grads = {"loss": loss.detach().reshape(1), "prompt": torch.tensor(prompt), "answer": torch.tensor(answer)}
    named = dict(model.gpt2.transformer.named_parameters())
    for k in model.tensors():
        p = model.memory if k == "memory" else named[k]
        grads["grad." + k] = p.grad.detach().clone()
    save_model(model, f"{out}/rmt_train.safetensors")
    save_file(grads, f"{out}/rmt_train.expected.safetensors")
    print(f"wrote {out}/rmt_train.* (loss {loss.item():.6f})")


# -- benchmark --------------------------------------------------------------------------------------
GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024,
                  layer_norm_epsilon=1e-5, eos_token_id=50256, gen_token_id=35353)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench_loop(model, dev, batch, n_seg, style, compiled):
    """Tokens/s of the segment loop over n_seg full segments of random tokens.
    style 'authors': GPT2LMHeadModel forward with logits of every position, as the released code runs it;
    'lean': the backbone only (no LM head), which is what the memory hand-off needs."""
    seg, m, V = model.seg, model.m, model.cfg["vocab_size"]
    toks = torch.randint(0, V - 2, (batch, (n_seg + 3) * seg), device=dev)

    def segment(read, t, write):
        x = torch.cat([read, model.embed(t), write], dim=1)
        if style == "authors":
            out = model.gpt2(inputs_embeds=x, output_hidden_states=True)
            return out.hidden_states[-1][:, -m:]
        return model.gpt2.transformer(inputs_embeds=x).last_hidden_state[:, -m:]

    fn = torch.compile(segment, mode="reduce-overhead", fullgraph=False) if compiled else segment

    def run(n, offset):
        st = model.new_state()
        for s in range(n):
            read, write = model.blocks(st, batch)
            M = fn(read, toks[:, (offset + s) * seg:(offset + s + 1) * seg], write).clone()
            st["M"] = M
            if model.kind == "rmt-r":
                st["store"].append(M)
        return st

    with torch.no_grad():
        run(3, 0)  # warm-up (compilation, graph capture, cuBLAS handles)
        sync(dev)
        t0 = time.perf_counter()
        run(n_seg, 3)
        sync(dev)
        dt = time.perf_counter() - t0
    return batch * n_seg * seg / dt, dt


def cmd_bench(args):
    dev = torch.device(args.device)
    dtype = dict(f32=torch.float32, bf16=torch.bfloat16)[args.dtype]
    torch.set_num_threads(args.threads) if args.threads else None
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for kind in args.kinds.split(","):
        mem = dict(kind=kind, num_mem_tokens=16, segment_size=512)
        if kind == "rmt-r":
            mem["retrieval"] = "v2"
        torch.manual_seed(0)
        model = RMT(dict(GPT2_SMALL, memory=mem), attn=args.attn).to(dev, dtype).eval()
        for batch in [int(b) for b in args.batch.split(",")]:
            for mode in args.modes.split(","):
                style, compiled = dict(authors=("authors", False), eager=("lean", False),
                                       compile=("lean", True))[mode]
                n_seg = args.segments if batch == 1 else max(8, args.segments // batch)
                tps, dt = bench_loop(model, dev, batch, n_seg, style, compiled)
                row = dict(kind=kind, batch=batch, mode=mode, segments=n_seg, seconds=round(dt, 3),
                           tokens_per_s=round(tps), ms_per_segment=round(1000 * dt / n_seg, 3))
                rows.append(row)
                print(json.dumps(row), flush=True)
    info = dict(torch=torch.__version__, transformers=__import__("transformers").__version__,
                device=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                dtype=args.dtype, attn=args.attn, threads=torch.get_num_threads())
    print(json.dumps(dict(info=info)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info=info, rows=rows), f, indent=1)
    print(f"\n| kind | batch | mode | segments | s | tokens/s | ms/segment |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['batch']} | {r['mode']} | {r['segments']} | {r['seconds']} | "
              f"{r['tokens_per_s']} | {r['ms_per_segment']} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixtures", help="write tiny models + expected outputs")
    f.add_argument("--out", default="tests/fixtures")
    f.add_argument("--only", choices=["armt", "armt-decay"],
                   help="write only these fixtures (the ARMT ones were added later, the decay one last)")
    b = sub.add_parser("bench", help="time the RMT segment loop, GPT-2 small shape")
    b.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    b.add_argument("--dtype", default="bf16", choices=["f32", "bf16"])
    b.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"])
    b.add_argument("--kinds", default="rmt,rmt-r")
    b.add_argument("--batch", default="1,16")
    b.add_argument("--modes", default="authors,eager,compile")
    b.add_argument("--segments", type=int, default=1954, help="1954 segments x 512 = 1M tokens")
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    torch.use_deterministic_algorithms(False)
    {"fixtures": cmd_fixtures, "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
