#!/usr/bin/env bash
# Set up, then build the seed's LR demo (examples/lr.py) and run it as three
# separate party processes (alice, bob, and the dealer) over loopback TCP.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[test]'
out=build/demo
rm -rf "$out"
python3 examples/lr.py --make-data "$out/data"
python3 -m mixc build examples/lr.py -o "$out/bundle"
python3 -m mixc run "$out/bundle" --local \
    --input x1="$out/data/x1.npy" --input x2="$out/data/x2.npy" --input y="$out/data/y.npy" \
    --output "$out/result"
python3 examples/lr.py --check "$out/data" "$out/result/alice"
echo
echo "== audit summary (full report: python3 -m mixc audit $out/bundle) =="
sed -n '/^trust assumptions:/,/^values/p' "$out/bundle/audit.txt" | sed '$d'
