#!/bin/sh
# Validate the example feeds against the schema: every examples/*.xml must pass
# jing (XML and compact syntax) and xmllint; every examples/invalid/*.xml must be
# rejected by all three. Run from anywhere; exits non-zero on the first surprise.
set -u
cd "$(dirname "$0")" || exit 2
status=0
for f in examples/*.xml; do
    if jing vmcast-feed.rng "$f" && jing -c vmcast-feed.rnc "$f" \
        && xmllint --noout --relaxng vmcast-feed.rng "$f" 2>/dev/null; then
        echo "ok (valid)     $f"
    else
        echo "FAIL: rejected $f"; status=1
    fi
done
for f in examples/invalid/*.xml; do
    xmllint --noout "$f" || { echo "FAIL: not well-formed $f"; status=1; continue; }
    if jing vmcast-feed.rng "$f" >/dev/null || jing -c vmcast-feed.rnc "$f" >/dev/null \
        || xmllint --noout --relaxng vmcast-feed.rng "$f" 2>/dev/null; then
        echo "FAIL: accepted $f"; status=1
    else
        echo "ok (rejected)  $f"
    fi
done
exit $status
