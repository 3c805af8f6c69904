#!/usr/bin/env bash
# Fetches the haystack text: Jane Austen's six novels as Debian's r-cran-janeaustenr ships them
# (an R data package; the novels are public domain, the package MIT). Needs no R: the package is
# downloaded (not installed) with apt-get and eval/rdata_text.py decodes its data base.
#
#   eval/stage_text.sh        # writes .model/text/<novel>.txt (git-ignored)
#
# eval/data/emma.txt, the default haystack, is a copy of .model/text/emma.txt; this script checks
# that the two agree.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/.model/text"
DEB=r-cran-janeaustenr_1.0.0-1_all.deb
DEB_SHA256=df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95
EMMA_SHA256=7c67b5985c6d0de1efaeb5d342d52cb82c38083c40e2295129e30e87ee690ebe

EXCLUDE=$(git -C "$ROOT" rev-parse --git-path info/exclude)
case "$EXCLUDE" in /*) ;; *) EXCLUDE="$ROOT/$EXCLUDE" ;; esac
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.model/' "$EXCLUDE" 2>/dev/null || echo '/.model/' >> "$EXCLUDE"

mkdir -p "$OUT"
cd "$OUT"
if [ ! -f "$DEB" ]; then
  # apt-get download needs the package lists; fetch them once if it fails without.
  apt-get download r-cran-janeaustenr=1.0.0-1 || { apt-get update -qq && apt-get download r-cran-janeaustenr=1.0.0-1; }
fi
echo "$DEB_SHA256  $DEB" | sha256sum -c -
rm -rf deb && dpkg-deb -x "$DEB" deb
python3 "$ROOT/eval/rdata_text.py" deb/usr/lib/R/site-library/janeaustenr/data "$OUT"
cp deb/usr/share/doc/r-cran-janeaustenr/copyright "$OUT/COPYRIGHT"
echo "$EMMA_SHA256  emma.txt" | sha256sum -c -
cmp -s emma.txt "$ROOT/eval/data/emma.txt" && echo "eval/data/emma.txt matches" \
  || echo "note: eval/data/emma.txt differs from (or lacks) the staged copy"
wc -w "$OUT"/*.txt
