#!/usr/bin/env bash
# Fuzz a running `qg serve` against its own OpenAPI document with schemathesis.
#
#   QG_FUZZ_TOKEN=$(qg token create --user fuzz --role admin) benches/schemathesis.sh http://127.0.0.1:7878
#
# Use a throw-away store: the fuzzer creates and deletes namespaces, branches and tokens.
# Start the server with a high --auth-failure-limit, or the fuzzer's unauthenticated
# probes (the `ignored_auth` check) get the client rate-limited.
# Every check runs except `positive_data_acceptance`: JSON Schema cannot say "valid RDF",
# "an existing ref" or "a valid N-Triples term", so schema-valid requests are rightly
# refused with 400/404 by the same validation the CLI applies.
set -euo pipefail
url=${1:?usage: schemathesis.sh BASE_URL (with QG_FUZZ_TOKEN set to an admin token)}
: "${QG_FUZZ_TOKEN:?set QG_FUZZ_TOKEN to a store-wide admin token}"
examples=${QG_FUZZ_EXAMPLES:-25}
if ! command -v schemathesis >/dev/null; then
  echo "schemathesis is not installed: python3 -m pip install schemathesis" >&2
  exit 2
fi
exec schemathesis run "$url/openapi.json" \
  --header "Authorization: Bearer $QG_FUZZ_TOKEN" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$examples" --workers 1 --seed "${QG_FUZZ_SEED:-20261126}" \
  --suppress-health-check all --no-color
