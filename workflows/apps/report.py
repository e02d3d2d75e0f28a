#!/usr/bin/env python3
"""A stand-in for a report job: prints its arguments."""
import sys

print("report:", " ".join(sys.argv[1:]))
