#!/usr/bin/env python3
"""A stand-in for an ingest job: prints its arguments."""
import sys

print("ingest:", " ".join(sys.argv[1:]))
