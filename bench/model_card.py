"""Write the model card (README.md) next to a bundled model from its training log and the
evaluation report of bench.model_eval.

    python -m bench.model_card --model fim_server/bundled/fim-tiny-dlm --eval bench/results/model_eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.machine import cpu_model

OBJECTIVES = {
    "diffusion": (
        "Masked-diffusion FIM coder: a Qwen2 transformer run with **bidirectional** attention "
        "(an all-visible 4-D attention mask). The middle is a canvas of `<|mask|>` slots between the "
        "prefix and the suffix. {convention} "
        "Length is learned DreamOn-style: a slot labelled `<|expand|>` stands for two or more middle "
        "tokens (adjacent masked slots merged in training; at inference it becomes two masks), trailing "
        "slots labelled `<|delete|>` stand for nothing (removed at inference). Training mixes FIM canvases "
        "(35% with merges, 35% with 1-16 trailing deletes, 30% exact length; mask rate t ~ U(0.05, 1)) "
        "with plain masked-LM windows; loss: cross-entropy on masked slots."
    ),
    "ar": (
        "Autoregressive FIM coder: the same Qwen2 transformer with causal attention, trained on PSM "
        "sequences `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>M<|endoftext|>` (FIM rate 1.0) with "
        "the language-model loss on every token."
    ),
}


RECIPE = (
    "fim-server train --objective ar --out runs/repro/ar --tokenizer runs/repro/tokenizer \\\n"
    "  --steps 2000 --batch 16 --seq-len 256 --lr 1e-3 --warmup 200 --seed 0 --threads 1 \\\n"
    "  --save-every 200 --eval-every 200 --keep-at 800 --bundle-to fim_server/bundled/fim-tiny-ar",
    "fim-server train --objective diffusion --out runs/repro/dlm --tokenizer runs/repro/tokenizer \\\n"
    "  --init-from runs/repro/ar/step-800 --shifted true --steps 1600 --batch 16 --seq-len 256 \\\n"
    "  --lr 7e-4 --warmup 50 --mdlm-fraction 0.35 --seed 0 --threads 1 \\\n"
    "  --save-every 100 --eval-every 100 --bundle-to fim_server/bundled/fim-tiny-dlm",
    "python -m bench.model_eval --dlm fim_server/bundled/fim-tiny-dlm --ar fim_server/bundled/fim-tiny-ar "
    "--held 100 --out bench/results/model_eval.json",
    "python -m bench.model_card --model fim_server/bundled/fim-tiny-dlm --eval bench/results/model_eval.json",
    "python -m bench.model_card --model fim_server/bundled/fim-tiny-ar --eval bench/results/model_eval.json",
)


def table(rows: list[dict]) -> str:
    head = "| setting | exact match | edit similarity | pass@1 | NFE / case | tokens / forward | empty |\n|---|---|---|---|---|---|---|\n"
    body = ""
    for r in rows:
        p = f"{r['pass@1']:.3f}" if "pass@1" in r else "-"
        body += (f"| {r['setting']} | {r['exact_match']:.3f} | {r['edit_similarity']:.3f} | {p} | "
                 f"{r['nfe_mean']:.1f} | {r['tokens_per_forward']:.2f} | {r['empty']:.2f} |\n")
    return head + body


def card(model_dir: Path, report: dict) -> str:
    log = json.loads((model_dir / "train_log.json").read_text())
    cfg, data, hist = log["config"], log["data"], log["history"]
    last = hist[-1] if hist else {}
    steps = last.get("step", 0)
    size_mb = sum(f.stat().st_size for f in model_dir.iterdir()) / 1e6
    lines = [
        f"# {model_dir.name}",
        "",
        OBJECTIVES[cfg["objective"]].format(convention=(
            "Logits are shifted (position i-1 predicts slot i), the convention of Dream-family models, "
            "because this twin starts from AR weights (see the notes below)." if cfg.get("shifted") else
            "Each slot is predicted at its own position (no logit shift).")),
        "",
        "## Facts",
        f"- Parameters: {log['params'] / 1e6:.2f} M (Qwen2: {cfg['layers']} layers, hidden {cfg['hidden']}, "
        f"{cfg['heads']} heads, MLP {cfg['intermediate']}, tied embeddings); weights stored in float16, "
        f"{size_mb:.1f} MB on disk with the tokenizer.",
        f"- Tokenizer: byte-level BPE, {cfg['vocab_size']} entries, trained with `tokenizers` on the training "
        "split; shared by both twins.",
        f"- Data: the CPython {'.'.join(map(str, __import__('sys').version_info[:3]))} standard library of the "
        f"training machine (PSF license): {data['files']} files, {data['duplicates']} duplicates dropped, "
        f"{data['humaneval']} dropped for containing a HumanEval function signature; {data['train']} files "
        f"({data['train_chars'] / 1e6:.1f} M chars) for training, {data['held_out']} whole modules "
        f"({data['held_out_chars'] / 1e3:.0f} k chars) held out and never trained on.",
        f"- Training: {steps} steps x batch {cfg['batch']} x {cfg['seq_len']} tokens = "
        f"{last.get('tokens_seen', 0) / 1e6:.1f} M token positions seen; AdamW lr {cfg['lr']} "
        f"(warm-up {cfg['warmup']}, cosine), seed {cfg['seed']}.",
        f"- Final losses: train {last.get('train_loss')}, held-out {last.get('held_out_loss')}.",
        f"- Hardware: {cpu_model()} ({log.get('hardware', '?')}, the two twins training side by side); "
        f"wall time {log.get('wall_minutes', '?')} min.",
        f"- Context: {cfg['seq_len']} tokens (prefix + middle + suffix); middles up to {cfg['max_middle']} tokens.",
        "",
        "## Loss history",
        "| step | train loss | held-out loss | tokens seen |",
        "|---|---|---|---|",
        *[f"| {h['step']} | {h['train_loss']} | {h['held_out_loss']} | {h['tokens_seen']:,} |" for h in hist],
        "",
        "## Held-out results",
        f"Measured by `python -m bench.model_eval` on {report['machine'].get('gpu') or report['machine']['cpu']}; "
        "both twins on the same cases in one run. `diffusion + oracle length` is told the true number of "
        "middle tokens, to show what the expand/delete length scheme recovers. HumanEval rows with fewer than "
        "1033 cases use an evenly spaced subset (every k-th case) of the regenerated single-line set.",
        "",
    ]
    for suite, rows in report["suites"].items():
        lines += [f"### {suite} ({rows[0]['cases']} cases)", "", table(rows)]
    lines += ["## Reproduce",
              "Both twins from scratch, one schedule each (the diffusion twin starts from the AR twin's "
              "step-800 weights, kept by `--keep-at`; it can start as soon as they exist):", "```bash",
              *RECIPE, "```", "", "## Notes", log.get("notes", ""), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--eval", required=True)
    args = p.parse_args()
    model_dir = Path(args.model)
    text = card(model_dir, json.loads(Path(args.eval).read_text()))
    (model_dir / "README.md").write_text(text)
    print(f"wrote {model_dir / 'README.md'}")


if __name__ == "__main__":
    main()
