#!/usr/bin/env bash
# Fails unless the dynamic symbols liblighthouse.so defines are exactly the lh_* functions that
# lighthouse.h declares: no LLVM/MLIR symbol may leak (a host process such as Julia or PyTorch
# carries its own LLVM, and a leaked symbol would be interposed), and no declared function may be
# missing.
set -euo pipefail
lib=$1 header=$2
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWiVDdBbRr]$/ {print $3}' | sed 's/@.*//' | sort -u)
declared=$(grep -oP '\blh_[a-z0-9_]+(?=\s*\((?!\*))' "$header" | sort -u)
if [ "$exported" != "$declared" ]; then
  echo "exported symbols and lighthouse.h differ:"
  diff <(echo "$declared") <(echo "$exported") | sed 's/^</  declared only:/; s/^>/  exported only:/' || true
  exit 1
fi
echo "exports match lighthouse.h: $(echo "$exported" | wc -l) functions"
