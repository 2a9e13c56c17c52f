#!/usr/bin/env bash
# Runs the test suite. Extra arguments go to `dotnet test` (e.g. --filter "FullyQualifiedName~Foundation").
# Tests in category "Large" (a model over 2 GiB written to disk) are left out of the default run;
# LONGCTX_TESTS=large runs only them, LONGCTX_TESTS=all runs everything. .ci/run runs both and sums them.
# LONGCTX_SHARED=DIR points the tests at another shared folder than ../shared (fixtures absent => those tests skip).
set -euo pipefail
cd "$(dirname "$0")"
case "${LONGCTX_TESTS:-default}" in
  default) category='TestCategory!=Large' ;;
  large) category='TestCategory=Large' ;;
  all) category='' ;;
  *) echo "test.sh: LONGCTX_TESTS must be default, large or all (got '${LONGCTX_TESTS}')" >&2; exit 2 ;;
esac
args=()
filter=''
while [ $# -gt 0 ]; do
  case "$1" in
    --filter) filter="$2"; shift 2 ;;
    --filter=*) filter="${1#--filter=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$category" ]; then filter="${filter:+($filter)&}$category"; fi
exec dotnet test tests/LongCtx.Tests.csproj --logger "console;verbosity=minimal" ${filter:+--filter "$filter"} "${args[@]}"
