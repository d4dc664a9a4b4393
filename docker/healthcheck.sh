#!/bin/sh
# healthcheck.sh controller | engines N — the containers' health checks.
#   controller: GET /api/v1/info answers 200 with the token of the
#               connection file on the shared volume
#   engines N:  the controller lists at least N live engines
set -eu
profile=${IPPC_PROFILE:-docker}
file=${IPPC_DIR:-/ippc}/profile_$profile/security/ippc-client.json
[ -r "$file" ] || exit 1
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$file")
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$file")
case "${1:-}" in
controller)
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" "$url/api/v1/info"
    ;;
engines)
    live=$(curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/engines" |
        python3 -c 'import json,sys; print(sum(e["state"] != "dead" for e in json.load(sys.stdin)["engines"]))')
    [ "$live" -ge "${2:-1}" ]
    ;;
*)
    echo "usage: healthcheck.sh controller | engines N" >&2
    exit 2
    ;;
esac
