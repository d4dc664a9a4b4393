#!/bin/sh
# seed-python.sh — the seed scenario (using-mpi-with-ipython) in Python, as
# written: starts a cluster of 4 MPI engines running Python
# (ippc cluster start -n 4 --runtime=python), runs the seed's psum.py on
# them over REST, scatters arange(16.0), calls psum(a) everywhere (a real
# MPI Allreduce among the four ranks, through the engines' mpi4py.MPI) and
# reads totalsum back.  Stops the cluster at the end.  Ends by printing
#   totalsum: [120.0, 120.0, 120.0, 120.0]
# Needs curl and python3 (for JSON).  IPPC_DIR (default: a temporary folder)
# and PROFILE (default: seed-python) choose where the cluster's files go.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
IPPC=${IPPC:-$here/../build/bin/ippc}
PY=${PYTHON:-python3}
PROFILE=${PROFILE:-seed-python}
if [ -z "${IPPC_DIR:-}" ]; then
    IPPC_DIR=$(mktemp -d)
    made_dir=1
else
    made_dir=0
fi
export IPPC_DIR

stop() {
    "$IPPC" cluster stop --profile "$PROFILE" >/dev/null 2>&1 || true
    if [ "$made_dir" = 1 ]; then rm -rf "$IPPC_DIR"; fi
}
trap stop EXIT INT TERM

"$IPPC" cluster start -n 4 --runtime=python --profile "$PROFILE" --daemonize

CONN=$IPPC_DIR/profile_$PROFILE/security/ippc-client.json
URL=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$CONN")
TOKEN=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$CONN")
URL=${URL%/}

api() {
    if [ $# -ge 3 ]; then
        body=$(curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $TOKEN" \
            -H 'Content-Type: application/json' --data-binary "$3" "$URL$2") || {
            printf 'seed-python.sh: %s %s failed: %s\n' "$1" "$2" "$body" >&2
            return 1
        }
    else
        body=$(curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $TOKEN" "$URL$2") || {
            printf 'seed-python.sh: %s %s failed: %s\n' "$1" "$2" "$body" >&2
            return 1
        }
    fi
    printf '%s\n' "$body"
}

# An answer whose status is not "ok" stops the script.
ok() {
    printf '%s' "$1" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d.get("status") != "ok")' || {
        printf 'seed-python.sh: not ok: %s\n' "$1" >&2
        exit 1
    }
}

field() {
    printf '%s' "$1" | "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[sys.argv[1]]))' "$2"
}

step() { printf '\n== %s\n' "$*"; }

step "view.run('psum.py')"
body=$("$PY" -c 'import json,sys; print(json.dumps({"filename": "psum.py", "source": open(sys.argv[1]).read()}))' "$here/psum.py")
out=$(api POST /api/v1/views/all/run "$body"); echo "$out"; ok "$out"

step "view.scatter('a', np.arange(16, dtype='float'))"
data=$("$PY" -c 'import json; print(json.dumps({"name": "a", "data": [float(i) for i in range(16)]}))')
out=$(api POST /api/v1/views/all/scatter "$data"); echo "$out"; ok "$out"

step "view['a']"
out=$(api GET /api/v1/views/all/vars/a); ok "$out"
echo "a: $(field "$out" results)"

step "%px totalsum = psum(a)"
out=$(api POST /api/v1/views/all/execute '{"code":"totalsum = psum(a)"}'); echo "$out"; ok "$out"

step "view['totalsum']"
out=$(api GET /api/v1/views/all/vars/totalsum); ok "$out"
echo "totalsum: $(field "$out" results)"
