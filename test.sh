#!/usr/bin/env bash
# Runs the whole test suite. Extra arguments go to `dotnet test` (e.g. --filter "FullyQualifiedName~Foundation").
set -euo pipefail
cd "$(dirname "$0")"
exec dotnet test tests/LongCtx.Tests.csproj --logger "console;verbosity=minimal" "$@"
