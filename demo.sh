#!/usr/bin/env bash
# The main job on the bundled demo model: build the tiny decoder, compile it, run it on CPU.
set -euo pipefail
cd "$(dirname "$0")"
dotnet build src/Cli/lcc.csproj -c Release -nologo -v q -clp:ErrorsOnly
exec dotnet src/Cli/bin/Release/net10.0/lcc.dll demo "$@"
