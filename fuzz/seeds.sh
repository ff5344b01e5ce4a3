#!/bin/sh
# The fuzz targets' seed corpora, generated from the repository (they are not
# kept in git: they would be copies of files that change):
#   fuzz/corpus/check   every policy of policies/, tests/cases/, tests/ui/ and
#                       examples/ (named after its path);
#   fuzz/corpus/decide  the frame of every test packet line of policies/ and
#                       tests/cases/, after a byte that selects its policy in the
#                       `decide` target's list (the same files, sorted).
# Run from anywhere: fuzz/seeds.sh; then `cd fuzz && cargo fuzz run -s none TARGET`.
set -eu
cd "$(dirname "$0")/.."
rm -rf fuzz/corpus/check fuzz/corpus/decide
mkdir -p fuzz/corpus/check fuzz/corpus/decide
for f in policies/*.lbp tests/cases/*.lbp tests/ui/*.lbp examples/*/*.lbp; do
    cp "$f" "fuzz/corpus/check/$(echo "$f" | tr / -)"
done
# shellcheck disable=SC2046
cargo run -q -p lbp-compiler --example fuzz_seeds -- fuzz/corpus/decide \
    $(LC_ALL=C ls policies/*.lbp tests/cases/*.lbp | LC_ALL=C sort)
echo "$(ls fuzz/corpus/check | wc -l) check seeds in fuzz/corpus/check"
