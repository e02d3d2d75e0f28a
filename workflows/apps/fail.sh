#!/bin/sh
echo "fail.sh: failing on purpose" >&2
exit 1
