#!/usr/bin/env python3
"""Local stand-in for Spark's examples/src/main/python/wordcount.py.

The local engine runs this when a submission names the vendor's sample path
and no Spark installation provides it. Same contract as the original: one
argument, a text file; prints "word: count" for every word, in first-seen order.
"""
import sys


def main(argv):
    if len(argv) != 2:
        print("Usage: wordcount <file>", file=sys.stderr)
        return 1
    counts = {}
    with open(argv[1], encoding="utf-8") as f:
        for line in f:
            for word in line.split(" "):
                word = word.strip()
                if word:
                    counts[word] = counts.get(word, 0) + 1
    print("local engine stand-in for the PySpark wordcount example")
    for word, n in counts.items():
        print("%s: %i" % (word, n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
