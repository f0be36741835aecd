#!/usr/bin/env python3
"""same_answers.py - how many questions two llava-eval reports (--report) answer
the same way: the GPU against the CPU's exact mode, a quantized format against
fp16, one engine against another.

    python3 tools/bench/same_answers.py A.json B.json [--show N]
"""
import json
import sys


def answers(path):
    report = json.load(open(path))
    return {q["question_id"]: q["prediction"] for q in report["questions"]}, report


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    show = int(argv[argv.index("--show") + 1]) if "--show" in argv else 5
    a, ra = answers(argv[1])
    b, rb = answers(argv[2])
    common = sorted(set(a) & set(b))
    differ = [q for q in common if a[q] != b[q]]
    print(f"same answer on {len(common) - len(differ)} / {len(common)} questions "
          f"({ra['settings']['backend']} {ra['accuracy']['overall']:.2f}% vs "
          f"{rb['settings']['backend']} {rb['accuracy']['overall']:.2f}%)")
    for q in differ[:show]:
        print(f"  question {q}: {a[q]!r} vs {b[q]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
