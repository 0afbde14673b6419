#!/usr/bin/env bash
# make test's work then and now (issue 11): the suite of an older commit, then today's make test
# steps over the e2e files that existed at that commit, back to back on this machine.
#
#   flock /tmp/serveops-ray.lock bench/suite_then_and_now.sh [COMMIT [then|now|both]]
#
# COMMIT defaults to 2cd2d1f. The old commit runs in a worktree beside this checkout (the e2e
# tests find ../shared/traces from there too) with this checkout's .venv (same pinned
# packages): a venv of links whose scripts run the worktree's code (PYTHONPATH first, its own
# `serveops` entry point), so nothing is installed and this checkout's venv is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
old=${1:-2cd2d1f}
halves=${2:-both}
src=$(mktemp -d "$(dirname "$here")/serveops-then-XXXX")
trap 'git -C "$here" worktree remove --force "$src" >/dev/null 2>&1 || true; rm -rf "$src"' EXIT
git worktree add -q --detach "$src" "$old"
venv=$src/.venv
mkdir -p "$venv/bin"
real=$(cd "$here/.venv" && pwd -P)  # where the scripts' #! lines point (.venv may be a link)
for e in "$real"/*; do [ "$(basename "$e")" = bin ] || ln -s "$e" "$venv/$(basename "$e")"; done
for f in "$real"/bin/*; do
  n=$(basename "$f")
  if [ -L "$f" ]; then cp -P "$f" "$venv/bin/$n"
  elif head -c 128 "$f" | grep -q "^#!$real/bin/python"; then
    sed "1s#$real#$venv#" "$f" > "$venv/bin/$n"; chmod +x "$venv/bin/$n"
  else ln -s "$f" "$venv/bin/$n"; fi
done
# The entry point of that commit (controller.cli:main before the layout move).
entry=$(sed -n 's/^serveops = "\(.*\):\(.*\)"/\1 \2/p' "$src/pyproject.toml")
sed -i "s/^from controller\.cli\.main import main$/from ${entry% *} import ${entry#* }/" "$venv/bin/serveops"
grep -q "^from ${entry% *} import" "$venv/bin/serveops"

t() { local s rc=0; s=$(date +%s); "$@" || rc=$?; echo "::: $(( $(date +%s) - s )) s, exit $rc: $*"; return $rc; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
export RAY_AUTH_MODE=disabled
e2e_then=$(cd "$src" && git ls-files 'tests/e2e/test_*.py')

if [ "$halves" != now ]; then
  echo "# then: $old, load average $(load)"
  (cd "$src" && export PYTHONPATH=$PWD && t .venv/bin/ruff check -q . && t .venv/bin/mypy \
    && t .venv/bin/pytest -q -p no:cacheprovider tests) || echo "::: then: a step failed (above)"
fi
if [ "$halves" != then ]; then
  echo "# now: $(git log --format=%h -1), load average $(load)"
  t .venv/bin/ruff check -q .
  t .venv/bin/mypy
  t .venv/bin/pytest -q -m "not e2e" -p no:cacheprovider -n auto --dist loadgroup tests
  now=()
  for f in $e2e_then; do [ -f "$f" ] && now+=("$f"); done
  t .venv/bin/pytest -q -m e2e -p no:cacheprovider "${now[@]}"
fi
echo "# end, load average $(load)"
