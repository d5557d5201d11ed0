"""The recipe that trains the bundled twins: one tokenizer, one architecture, one data stream,
two objectives.

  diffusion: bidirectional Qwen2, masked middle with DreamOn-style length tokens. A canvas slot
             whose label is <|expand|> stands for two or more middle tokens (adjacent masked
             slots merged); trailing slots labelled <|delete|> stand for nothing. Loss: cross
             entropy on masked slots, predicted at their own position (no shift).
  ar:        causal Qwen2 on PSM sequences <|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>M<|endoftext|>,
             loss on every token (the usual FIM language-model objective).
  block:     block diffusion from the AR twin's weights (train/block.py): PSM prompt, middle in
             blocks, complementary masks, certainty forcing, optionally the AR twin's own greedy
             middles as targets (--distill-from) and a share of plain AR batches (--ar-fraction).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import random
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

from fim_server.measure import cpu_model

from . import block as block_objective
from .data import ExampleSampler, collect_sources, iter_texts
from fim_server.models.family import BUNDLED_SPECIAL_TOKENS, fim_parts, fim_prompt
from fim_server.models.random_init import train_bpe, wrap_tokenizer
from fim_server.wire.options import option      # a field with its flag's help, as DecodeConfig's


@dataclass(frozen=True)
class TrainConfig:
    objective: str = option("diffusion", "diffusion | ar | block")
    out: str = option("runs/diffusion", "directory for checkpoints, logs and the final model")
    tokenizer: str = option("runs/tokenizer", "tokenizer directory; built here from the training data when missing")
    vocab_size: int = option(4096, "vocabulary of a tokenizer built here")
    hidden: int = option(256, "hidden size of a model built here (not with --init-from)")
    layers: int = option(4, "transformer layers of a model built here")
    heads: int = option(4, "attention heads of a model built here")
    intermediate: int = option(768, "MLP size of a model built here")
    seq_len: int = option(256, "tokens per training sequence (= the models' context budget)")
    max_middle: int = option(64, "middle tokens per FIM example (the inference canvas cap)")
    batch: int = option(16, "sequences per step")
    steps: int = option(3000, "optimiser steps in all (a run resumed from OUT/checkpoint goes on to this count)")
    lr: float = option(1e-3, "peak learning rate (linear warm-up, then cosine to zero)")
    warmup: int = option(200, "warm-up steps")
    weight_decay: float = option(0.1, "AdamW weight decay")
    mdlm_fraction: float = option(0.25, "diffusion: share of plain masked-LM windows (no FIM split)")
    seed: int = option(0, "seed of the data sampler and the initialisation")
    threads: int = option(0, "torch CPU threads; 0 = torch's default")
    save_every: int = option(250, "steps between resumable checkpoints")
    eval_every: int = option(250, "steps between held-out evaluations")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    init_from: str = option("", "start from these weights (e.g. the AR twin: AR-to-diffusion adaptation)")
    shifted: bool = option(False, "diffusion: position i-1 predicts token i (keeps an AR head's meaning)")
    bundle_to: str = option("", "also write the final model here in float16 (package data)")
    keep_at: str = option("", "comma-separated steps whose weights are kept as out/step-N")
    block_size: int = option(8, "block: slots per block (the engine's --block-size)")
    certainty: float = option(0.0, "block: weight of the entropy penalty on masked slots already right")
    ar_fraction: float = option(0.0, "block: share of batches that are plain AR (next-token) batches")
    distill_from: str = option("", "block: an AR FIM model whose greedy middles become the targets")
    ar_kl: float = option(0.0, "block with --distill-from: on the plain AR batches, weight of KL(teacher || student) "
                          "over the next-token distributions (keeps the student's causal predictions, which the "
                          "lossless mode outputs, near the teacher's)")
    bf16: bool = option(False, "bfloat16 autocast (CPUs with bf16 matrix units: AMX, avx512_bf16)")
    corpus: str = option("", "a package corpus fetched by `python -m fim_server.train.packages`")
    stdlib_share: float = option(0.0, "share of training windows from the standard library (0: by length, ~6% of the corpus)")
    whole_lines: float = option(0.5, "share of FIM cuts at line boundaries (the rest: rest-of-line and span cuts, 3:2)")
    word_cuts: float = option(0.0, "share of rest-of-line cuts whose cursor is at a pause point (data.pause_points)")
    context_weight: float = option(1.0, "ar, block's AR batches: loss weight of prefix/suffix tokens against middle "
                                     "tokens (1: plain LM loss)")
    context_mix: str = option("", "ar, block: comma-separated sequence lengths, one drawn per batch. AR batches grow so "
                               "that a batch stays batch x seq_len tokens (short contexts, more middles); block "
                               "batches keep their rows, the prompts cut to the drawn length (distilled: the "
                               "teacher's own budget split, as served)")
    fim_order: str = option("psm", "ar, block: psm <pre> P <suf> S <mid>, or spm <suf> S <pre> P <mid> (the prefix's "
                                "end next to the middle); written to config.json as fim_order")


# ---------------------------------------------------------------- tokenizer

def build_tokenizer(cfg: TrainConfig, train_sources) -> PreTrainedTokenizerFast:
    path = Path(cfg.tokenizer)
    if (path / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(path)
    tok = train_bpe(iter_texts(train_sources), cfg.vocab_size, list(BUNDLED_SPECIAL_TOKENS))
    fast = wrap_tokenizer(tok, list(BUNDLED_SPECIAL_TOKENS), eos="<|endoftext|>", bos=None)
    fast.save_pretrained(path)
    return fast


class Specials:
    def __init__(self, tok: PreTrainedTokenizerFast):
        v = tok.get_vocab()
        self.eot, self.pre, self.suf, self.mid = v["<|endoftext|>"], v["<|fim_prefix|>"], v["<|fim_suffix|>"], v["<|fim_middle|>"]
        self.mask, self.expand, self.delete = v["<|mask|>"], v["<|expand|>"], v["<|delete|>"]

    def prompt(self, p: list[int], s: list[int], order: str) -> list[int]:
        """The FIM prompt before the middle, as the engines build it (family.fim_prompt)."""
        return fim_prompt(p, s, self.pre, self.suf, self.mid, order)


# ---------------------------------------------------------------- batches

IGNORE = -100
WINDOW_CHARS_PER_TOKEN = 10      # file window per context token: ~3 chars make a token, so both sides get more text than room


def encode_split(tok, split, cfg: TrainConfig, room: int):
    """Token ids of prefix / middle / suffix, trimmed so that prefix + suffix <= room."""
    p, m, s = (e.ids for e in tok._tokenizer.encode_batch([split.prefix, split.middle, split.suffix], add_special_tokens=False))
    if not m or len(m) > cfg.max_middle:
        return None
    keep_p = min(len(p), max(room - len(s), (3 * room) // 4))
    keep_s = min(len(s), room - keep_p)
    keep_p = min(len(p), room - keep_s)
    return p[len(p) - keep_p:] if keep_p else [], m, s[:keep_s]


def ar_example(tok, sp: Specials, sampler: ExampleSampler, cfg: TrainConfig, seq_len: int = 0):
    """PSM ids, next-token labels and the label positions that predict the middle (or its end):
    ([T], [T], [T] bool), T <= seq_len (default cfg.seq_len)."""
    while True:
        parts = encode_split(tok, sampler.split(), cfg, (seq_len or cfg.seq_len) - len(_middle_room(cfg)) - 4)
        if parts:
            break
    p, m, s = parts
    ids = sp.prompt(p, s, cfg.fim_order) + m + [sp.eot]
    labels = ids[1:] + [IGNORE]
    context = len(ids) - len(m) - 2          # labels before the <|fim_middle|> position predict context
    return ids, labels, [False] * context + [True] * (len(ids) - context)


def ar_lengths(cfg: TrainConfig) -> list[int]:
    """The sequence lengths AR batches are drawn at (context_mix, else seq_len alone)."""
    lengths = [int(x) for x in cfg.context_mix.split(",") if x.strip()] or [cfg.seq_len]
    if min(lengths) <= len(_middle_room(cfg)) + 8 or max(lengths) > cfg.seq_len:
        raise ValueError(f"context_mix lengths must lie in ({len(_middle_room(cfg)) + 8}, seq_len={cfg.seq_len}]")
    return lengths


def _middle_room(cfg: TrainConfig) -> range:
    return range(cfg.max_middle + 16)    # room for the middle plus trailing delete slots


def diffusion_canvas(m: list[int], sp: Specials, rng: random.Random):
    """Noisy canvas and labels for a middle m: returns (inputs, labels) over the slots."""
    t = rng.uniform(0.05, 1.0)
    slots = [[tok, rng.random() < t] for tok in m]         # [label, masked]
    if not any(masked for _, masked in slots):
        slots[rng.randrange(len(slots))][1] = True
    roll = rng.random()
    if roll < 0.35:                                           # canvas too short: merge masked neighbours
        for _ in range(rng.randint(1, max(1, len(slots) - 1))):
            pairs = [i for i in range(len(slots) - 1) if slots[i][1] and slots[i + 1][1]]
            if not pairs:
                break
            i = rng.choice(pairs)
            slots[i:i + 2] = [[sp.expand, True]]
    elif roll < 0.7:                                          # canvas too long: trailing deletes
        slots += [[sp.delete, True] for _ in range(rng.randint(1, 16))]
    inputs = [sp.mask if masked else tok for tok, masked in slots]
    labels = [tok if masked else IGNORE for tok, masked in slots]
    return inputs, labels


def diffusion_example(tok, sp: Specials, sampler: ExampleSampler, cfg: TrainConfig, rng: random.Random):
    if rng.random() < cfg.mdlm_fraction:                    # plain masked LM on a window
        ids = tok._tokenizer.encode(sampler.window(), add_special_tokens=False).ids[:cfg.seq_len]
        t = rng.uniform(0.05, 1.0)
        masked = [rng.random() < t for _ in ids]
        inputs = [sp.mask if mk else i for i, mk in zip(ids, masked)]
        labels = [i if mk else IGNORE for i, mk in zip(ids, masked)]
        return inputs, labels
    while True:
        parts = encode_split(tok, sampler.split(), cfg, cfg.seq_len - len(_middle_room(cfg)))
        if parts:
            break
    p, m, s = parts
    if cfg.shifted and not p:
        p = [sp.eot]                  # shifted logits need a position before the first middle slot
    canvas, canvas_labels = diffusion_canvas(m, sp, rng)
    inputs = p + canvas + s
    labels = [IGNORE] * len(p) + canvas_labels + [IGNORE] * len(s)
    return inputs, labels


def collate(examples, pad: int):
    """Right-padded [B, T] inputs, labels and key-valid mask (examples: (ids, labels, ...))."""
    T = max(len(x) for x, *_ in examples)
    ids = torch.full((len(examples), T), pad, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    valid = torch.zeros((len(examples), T), dtype=torch.bool)
    for b, (x, y, *_) in enumerate(examples):
        ids[b, :len(x)] = torch.tensor(x)
        labels[b, :len(y)] = torch.tensor(y)
        valid[b, :len(x)] = True
    return ids, labels, valid


class Batches:
    """Training batches: (kind, tensors...), kind "ar" | "diffusion" | "block"."""

    def __init__(self, tok, sources, cfg: TrainConfig, seed: int, teacher=None):
        self.tok, self.cfg = tok, cfg
        self.sp = Specials(tok)
        self.sampler = ExampleSampler(sources, seed, window_chars=WINDOW_CHARS_PER_TOKEN * cfg.seq_len,
                                      stdlib_share=cfg.stdlib_share, whole_lines=cfg.whole_lines,
                                      word_cuts=cfg.word_cuts)
        self.lengths = ar_lengths(cfg) if cfg.objective in ("ar", "block") else [cfg.seq_len]
        self.rng = random.Random(seed + 1)
        self.teacher = teacher

    def next(self):
        cfg = self.cfg
        if cfg.objective == "ar" or (cfg.objective == "block" and self.rng.random() < cfg.ar_fraction):
            return self.ar_batch(self.rng.choice(self.lengths))
        if cfg.objective == "block":
            # no draw without a mix, so that runs from before --context-mix keep their random stream
            rows = self.block_rows(self.rng.choice(self.lengths) if len(self.lengths) > 1 else cfg.seq_len)
            return ("block", *block_objective.collate(rows, cfg.block_size, self.sp.mask, self.sp.eot, self.rng))
        ex = [diffusion_example(self.tok, self.sp, self.sampler, cfg, self.rng) for _ in range(cfg.batch)]
        return ("diffusion", *collate(ex, self.sp.eot))

    def ar_batch(self, length: int):
        """("ar", ids, labels, valid, middle): batch x seq_len / length examples of at most
        `length` tokens; middle [B, T] marks the labels of the middle and its end."""
        n = max(1, self.cfg.batch * self.cfg.seq_len // length)
        ex = [ar_example(self.tok, self.sp, self.sampler, self.cfg, length) for _ in range(n)]
        ids, labels, valid = collate(ex, self.sp.eot)
        middle = torch.zeros_like(valid)
        for b, (_, _, mid) in enumerate(ex):
            middle[b, :len(mid)] = torch.tensor(mid)
        return "ar", ids, labels, valid, middle

    def block_rows(self, length: int) -> list:
        """FIM prompts of at most `length` tokens and their middles (the teacher's greedy middles
        when there is a teacher)."""
        cfg, sp, end = self.cfg, self.sp, self.sp.eot
        if self.teacher is None:
            rows = []
            while len(rows) < cfg.batch:
                parts = encode_split(self.tok, self.sampler.split(), cfg, length - cfg.max_middle - cfg.block_size - 3)
                if parts:
                    p, m, s = parts
                    rows.append(block_objective.block_row(sp.prompt(p, s, cfg.fim_order), m + [end], end,
                                                          cfg.block_size))
            return rows
        return self.distilled_rows(length)

    @torch.inference_mode()
    def distilled_rows(self, length: int) -> list:
        """Sequence-level distillation: the teacher (an AR engine) decodes each prompt greedily;
        its middle, cut at its end token, is the target. A middle the repetition guard cut ends
        there too, so the student learns the guarded teacher's output (the loop's first copy,
        then the end) rather than to stop without an end."""
        from fim_server.engine.types import InfillRequest
        from fim_server.wire.options import DecodeConfig

        cfg, end = self.cfg, self.sp.eot
        config = DecodeConfig(engine="ar", max_tokens=cfg.max_middle, kv_reuse=False, context_tokens=length)
        splits = [self.sampler.split() for _ in range(cfg.batch)]
        rows = [self.teacher.start(InfillRequest(sp.prefix, sp.suffix), config) for sp in splits]
        self.teacher.decode(rows, config, None)
        if self.teacher.lm.family.fim_order != cfg.fim_order:      # the student's prompt order
            prompts = [self.sp.prompt(*fim_parts(r.prompt, self.sp.pre, self.sp.suf, self.sp.mid), cfg.fim_order)
                       for r in rows]
        else:
            prompts = [list(r.prompt) for r in rows]
        return [block_objective.block_row(prompt, r.ids + ([end] if r.stop_reason in ("end", "repeat") else []),
                                          end, cfg.block_size) for prompt, r in zip(prompts, rows)]


# ---------------------------------------------------------------- model and loss

def build_model(cfg: TrainConfig, tok) -> torch.nn.Module:
    family = {"diffusion": "fim-tiny-dlm", "ar": "fim-tiny-ar", "block": "fim-tiny-block"}[cfg.objective]
    if cfg.init_from:
        # float32 to train in, whatever the checkpoint holds (the bundled twins are float16)
        model = AutoModelForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32)
        model.config.fim_family = family
        model.config.fim_logits_shifted = cfg.shifted or cfg.objective == "block"   # block: the AR head's meaning
        model.config.fim_context_tokens = cfg.seq_len
        model.config.fim_order = cfg.fim_order
        return model
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    config.fim_family = family
    config.fim_context_tokens = cfg.seq_len
    config.fim_order = cfg.fim_order
    config.fim_logits_shifted = cfg.shifted or cfg.objective == "block"
    return AutoModelForCausalLM.from_config(config)


def loss_on(model, ids, labels, valid, objective: str, shifted: bool = False,
            middle=None, context_weight: float = 1.0, teacher=None, kl: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions; with `middle` ([B, T] bool, AR batches)
    the other labelled positions (prefix and suffix) weigh `context_weight` each. With a
    `teacher` (AR batches), plus `kl` x KL(teacher || student) at the valid positions."""
    if objective == "diffusion":
        mask = valid[:, None, None, :].expand(-1, 1, ids.shape[1], -1)     # [B, 1, T, T] bidirectional
        logits = model(input_ids=ids, attention_mask=mask).logits
        if shifted:                                                         # logits at i-1 predict i
            logits, labels = logits[:, :-1], labels[:, 1:]
    else:
        logits = model(input_ids=ids, attention_mask=valid.long()).logits
    loss = cross_entropy(logits, labels, middle, context_weight)
    if teacher is not None and kl > 0:
        loss = loss + kl * teacher_kl(logits, teacher, ids, valid)
    return loss


def cross_entropy(logits, labels, middle=None, context_weight: float = 1.0) -> torch.Tensor:
    """logits [B, T, V], labels [B, T]; `middle` [B, T] bool: see loss_on."""
    if middle is None or context_weight == 1.0:
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="none")
    weight = torch.where(middle.flatten(), 1.0, context_weight) * (labels.flatten() != IGNORE)
    return (per_token * weight).sum() / weight.sum().clamp_min(1e-9)


def teacher_kl(logits, teacher, ids, valid) -> torch.Tensor:
    """Mean over valid positions of KL(teacher || student) between next-token distributions:
    logits [B, T, V] (the student's, same causal prompt as the teacher's)."""
    with torch.no_grad():
        target = F.log_softmax(teacher(input_ids=ids, attention_mask=valid.long()).logits.float(), dim=-1)
    per_position = F.kl_div(F.log_softmax(logits.float(), dim=-1), target, log_target=True, reduction="none").sum(-1)
    return per_position[valid].mean()


def batch_loss(model, batch: tuple, cfg: TrainConfig, context_weight: float | None = None,
               teacher=None) -> torch.Tensor:
    """The training loss of one batch; `context_weight` overrides the config's (held-out losses);
    `teacher` (an AR model) adds cfg.ar_kl x its KL term to AR batches."""
    kind, *tensors = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16 and tensors[0].device.type == "cpu"):
        if kind == "block":
            return block_objective.block_loss(model, *tensors, certainty=cfg.certainty)
        if kind == "ar":
            ids, labels, valid, middle = tensors
            weight = cfg.context_weight if context_weight is None else context_weight
            return loss_on(model, ids, labels, valid, kind, middle=middle, context_weight=weight,
                           teacher=teacher, kl=cfg.ar_kl)
        return loss_on(model, *tensors, kind, cfg.shifted)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---------------------------------------------------------------- loop

def to_device(batch: tuple, dev: torch.device) -> tuple:
    kind, *tensors = batch
    return (kind, *(t.to(dev) for t in tensors))


def save(model, tok, opt, step: int, out: Path, log: dict) -> None:
    tmp = out / "checkpoint.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    torch.save({"opt": opt.state_dict(), "step": step, "rng": torch.get_rng_state()}, tmp / "train_state.pt")
    (tmp / "train_log.json").write_text(json.dumps(log, indent=1))
    final = out / "checkpoint"
    if final.exists():
        old = out / "checkpoint.old"
        final.rename(old)
        tmp.rename(final)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(final)


def keep_steps(cfg: TrainConfig) -> set[int]:
    return {int(s) for s in cfg.keep_at.split(",") if s.strip()}


def keep_snapshot(out: Path, step: int) -> None:
    """Copy the weights just saved to out/step-N (without optimizer state), renamed into place
    only when complete, so a job waiting for it never reads half a model (e.g. the diffusion
    twin's `--init-from`)."""
    tmp, dest = out / f"step-{step}.tmp", out / f"step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(out / "checkpoint", tmp, ignore=shutil.ignore_patterns("train_state.pt"))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


@torch.no_grad()
def held_out_loss(model, batches: list, cfg: TrainConfig, context_weight: float = 1.0) -> float:
    """Mean loss over the held-out batches; AR batches weigh every token alike (context_weight 1),
    whatever the training weight, so that stages compare; 0 gives the middle-only loss."""
    model.eval()
    losses = [batch_loss(model, b, cfg, context_weight).item() for b in batches]
    model.train()
    return sum(losses) / len(losses)


def train(cfg: TrainConfig) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dev = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if cfg.device == "auto" else cfg.device))
    train_src, held_src, report = collect_sources(corpus=Path(cfg.corpus) if cfg.corpus else None)
    print(f"data: {report}")
    tok = build_tokenizer(cfg, train_src)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "checkpoint" / "train_state.pt"
    resuming = state_file.exists()
    model = (AutoModelForCausalLM.from_pretrained(out / "checkpoint", dtype=torch.float32) if resuming
             else build_model(cfg, tok)).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    log = {"config": asdict(cfg), "data": report, "params": n_params, "history": [], "started": time.time()}
    start = 0
    if resuming:
        state = torch.load(state_file, weights_only=False)
        opt.load_state_dict(state["opt"])
        start = state["step"]
        log = json.loads((out / "checkpoint" / "train_log.json").read_text())
        changed = {k: v for k, v in asdict(cfg).items() if log["config"].get(k) != v}
        if changed:       # the log's config is the one in force; each restart that changed it is kept
            log.setdefault("restarts", []).append({"step": start, "was": {k: log["config"].get(k) for k in changed},
                                                   "now": changed})
            log["config"] = asdict(cfg)
        print(f"resuming from step {start}" + (f", with {changed}" if changed else ""))
    teacher = None
    if cfg.distill_from:
        from fim_server.engine import load_engine

        teacher = load_engine("ar", cfg.distill_from, device=str(dev), dtype="float32")
        if cfg.ar_kl and teacher.lm.family.fim_order != cfg.fim_order:
            raise SystemExit(f"--ar-kl compares next-token predictions on the same prompt: the teacher reads "
                             f"{teacher.lm.family.fim_order}, the student is trained in {cfg.fim_order}")
    batches = Batches(tok, train_src, cfg, cfg.seed + start, teacher)
    held = Batches(tok, held_src, replace(cfg, context_mix=""), 12345, teacher)   # full-length, as every stage
    held_batches = [to_device(held.next(), dev) for _ in range(4)]
    model.train()
    tokens_per_step = cfg.batch * cfg.seq_len
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {cfg.objective}",
               mininterval=5)
    t0, loss_ema = time.time(), None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = batch_loss(model, to_device(batches.next(), dev), cfg, teacher=teacher.model if teacher else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.3f}", lr=f"{lr_at(step, cfg):.1e}")
        if step == start + 9:
            per_step = (time.time() - t0) / 10
            print(f"\nestimate: {per_step:.2f} s/step -> {per_step * (cfg.steps - step) / 60:.0f} min "
                  f"for the remaining {cfg.steps - step} steps on {dev} ({n_params / 1e6:.1f}M params)")
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            log["history"].append({"step": done, "train_loss": round(loss_ema, 4),
                                   "held_out_loss": round(held_out_loss(model, held_batches, cfg), 4),
                                   **({"held_out_middle_loss": round(held_out_loss(model, held_batches, cfg, 0.0), 4)}
                                      if cfg.objective == "ar" else {}),
                                   "tokens_seen": done * tokens_per_step, "elapsed_s": round(time.time() - t0)})
            tqdm.write(json.dumps(log["history"][-1]))
        if done % cfg.save_every == 0 or done == cfg.steps:
            log["hardware"] = hardware(dev)
            save(model, tok, opt, done, out, log)
        if done in keep_steps(cfg):
            keep_snapshot(out, done)
    final = out / "final"
    final.mkdir(exist_ok=True)
    model.save_pretrained(final)
    tok.save_pretrained(final)
    (final / "train_log.json").write_text(json.dumps(log, indent=1))
    if cfg.bundle_to:
        export(final, Path(cfg.bundle_to))
    return final


def export(src: Path, dest: Path) -> None:
    """Copy a trained model as package data: float16 weights (half the size; loaded as float32
    on CPU), the tokenizer and the training log for the model card."""
    model = AutoModelForCausalLM.from_pretrained(src)
    dest.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(dest)
    PreTrainedTokenizerFast.from_pretrained(src).save_pretrained(dest)
    (dest / "train_log.json").write_text((src / "train_log.json").read_text())


def hardware(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model()}, {torch.get_num_threads()} torch threads ({os.cpu_count()} cores)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    for f in fields(TrainConfig):
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(f.default, bool) else type(f.default)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                       metavar="BOOL" if isinstance(f.default, bool) else None,
                       help=f"{f.metadata['help']} (default: {f.default!r})".replace("%", "%%"))   # argparse %-formats help


def main(args: argparse.Namespace) -> int:
    names = asdict(TrainConfig()).keys()
    cfg = TrainConfig(**{k: getattr(args, k) for k in names})
    if cfg.objective not in ("diffusion", "ar", "block"):
        raise SystemExit("--objective must be diffusion, ar or block")
    if cfg.fim_order not in ("psm", "spm") or (cfg.fim_order == "spm" and cfg.objective == "diffusion"):
        raise SystemExit("--fim-order must be psm or spm, and spm applies to --objective ar and block only")
    if cfg.context_mix and cfg.objective == "diffusion":
        raise SystemExit("--context-mix applies to --objective ar and block only")
    if cfg.ar_kl and not (cfg.objective == "block" and cfg.distill_from and cfg.ar_fraction > 0):
        raise SystemExit("--ar-kl needs --objective block, --distill-from (the teacher) and --ar-fraction > 0")
    if not 0.0 <= cfg.whole_lines <= 1.0 or not 0.0 <= cfg.word_cuts <= 1.0 or cfg.context_weight < 0:
        raise SystemExit("--whole-lines and --word-cuts must lie in [0, 1] and --context-weight must not be negative")
    path = train(cfg)
    print(f"model written to {path}")
    return 0
