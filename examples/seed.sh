#!/bin/sh
# seed.sh — the seed scenario (using-mpi-with-ipython) with curl against a
# running ippc cluster:
#
#   make run                 # or: build/bin/ippc cluster start -n 4 --engines=mpi
#   examples/seed.sh         # in another terminal
#
# Reads URL and token from the client connection file
#   $IPPC_DIR/profile_$PROFILE/security/ippc-client.json
# (IPPC_DIR defaults to ~/.ippc, PROFILE to "default"), or from $IPPC_URL and
# $IPPC_TOKEN when both are set.  Needs curl and python3 (to read/write JSON;
# jq is not required).  Ends by printing totalsum: [120, 120, 120, 120].
set -eu

here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
IPPC_DIR=${IPPC_DIR:-$HOME/.ippc}
PROFILE=${PROFILE:-default}
CONN=${IPPC_CONNECTION_FILE:-$IPPC_DIR/profile_$PROFILE/security/ippc-client.json}

if [ -n "${IPPC_URL:-}" ] && [ -n "${IPPC_TOKEN:-}" ]; then
    URL=$IPPC_URL
    TOKEN=$IPPC_TOKEN
else
    if [ ! -r "$CONN" ]; then
        echo "seed.sh: no connection file at $CONN (is a cluster running? try 'make run')" >&2
        exit 1
    fi
    URL=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$CONN")
    TOKEN=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$CONN")
fi
URL=${URL%/}

# api METHOD PATH [BODY] — prints the response body; fails (printing the
# error body) on HTTP >= 400.
api() {
    if [ $# -ge 3 ]; then
        body=$(curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $TOKEN" \
            -H 'Content-Type: application/json' --data-binary "$3" "$URL$2") || {
            printf 'seed.sh: %s %s failed: %s\n' "$1" "$2" "$body" >&2
            return 1
        }
    else
        body=$(curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $TOKEN" "$URL$2") || {
            printf 'seed.sh: %s %s failed: %s\n' "$1" "$2" "$body" >&2
            return 1
        }
    fi
    printf '%s\n' "$body"
}

# field JSON KEY — prints one top-level field of a JSON document as JSON.
field() {
    printf '%s' "$1" | "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[sys.argv[1]]))' "$2"
}

step() { printf '\n== %s\n' "$*"; }

step "cluster at $URL"
api GET /api/v1/info

step "run psum.lua on all engines"
body=$("$PY" -c 'import json,sys; print(json.dumps({"filename": "psum.lua", "source": open(sys.argv[1]).read()}))' "$here/psum.lua")
api POST /api/v1/views/all/run "$body"

step "scatter a = 0..15"
api POST /api/v1/views/all/scatter '{"name":"a","data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}'

step "view['a']"
out=$(api GET /api/v1/views/all/vars/a)
echo "$out"
echo "a: $(field "$out" results)"

step "execute totalsum = psum(a)"
api POST /api/v1/views/all/execute '{"code":"totalsum = psum(a)"}'

step "view['totalsum']"
out=$(api GET /api/v1/views/all/vars/totalsum)
echo "$out"
echo "totalsum: $(field "$out" results)"
