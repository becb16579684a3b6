"""Build the small offline CLIP BPE vocabulary that ships with ebca_viz.

Real Stable Diffusion checkpoints carry their own ``tokenizer/`` folder; the
tiny and shapes-world models built by this package cannot download one, so we
ship a CLIP-format vocabulary (``vocab.json`` + ``merges.txt``) learned here
by byte-pair encoding on a word list (the Attend-and-Excite prompt words, the
shapes-world words and common prompt words). Every word of that list becomes a
single token, so token positions mean what they mean for SD ("A cat wearing a
shirt": 0 = start-of-text, 5 = "shirt"); any other word still tokenizes, as
byte-level pieces, exactly like CLIP does for rare words.

Run ``python -m ebca_viz.models.tokenizer_build`` to regenerate the files.
"""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent / "tokenizer"

COMMON = """
a an the and with of in on at to from next near by under over behind beside besides
is are wearing holding sitting standing riding eating playing flying running walking
photo picture painting image portrait drawing sketch of style art
red green blue yellow orange purple pink brown black white gray grey gold silver
circle square triangle star shape shapes left right top bottom small big large tiny
cat dog lion crown shirt castle river boat monet impression sunrise house lake water
colors colours watercolor watercolors teddy bear zebra horse glasses hat woman man face
person child tree flower mountain sky sea beach city street car bench bowl clock apple
balloon bow chair backpack suitcase bird mouse frog rabbit elephant monkey turtle
""".split()

SHAPES_WORDS = "circle square triangle red green blue yellow magenta cyan white orange and a".split()


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 byte -> printable unicode map (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def word_list() -> list[str]:
    words = set(COMMON) | set(SHAPES_WORDS)
    try:  # the AnE prompt words, shipped with the package
        from ebca_viz.data import load_ae_prompts

        for prompts in load_ae_prompts().values():
            for p in prompts:
                words.update(re.findall(r"[a-z]+", p.lower()))
    except Exception:  # pragma: no cover - only when building before the data exists
        pass
    return sorted(words)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Greedy BPE until every word is one symbol. Returns merges in rank order."""
    b2u = bytes_to_unicode()
    seqs = {}
    for w in words:
        chars = [b2u[b] for b in w.encode("utf-8")]
        chars[-1] = chars[-1] + "</w>"
        seqs[w] = chars
    merges: list[tuple[str, str]] = []
    while True:
        counts: collections.Counter = collections.Counter()
        for s in seqs.values():
            for a, b in zip(s, s[1:]):
                counts[(a, b)] += 1
        if not counts:
            return merges
        # most frequent pair, ties broken deterministically
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        a, b = pair
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out


def build(out_dir: Path = HERE) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    b2u = bytes_to_unicode()
    base = list(b2u.values())
    vocab_tokens = base + [c + "</w>" for c in base]
    merges = learn_merges(word_list())
    vocab_tokens += ["".join(m) for m in merges]
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {}
    for t in vocab_tokens:  # keep first occurrence
        vocab.setdefault(t, len(vocab))
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return out_dir


if __name__ == "__main__":
    print(build())
