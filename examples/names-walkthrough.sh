#!/bin/sh
# Connect by name, step by step (docs/names.md "A walkthrough"): a real dnsmasq on
# 127.0.0.77:53 answers api.example.com; an agent learns it by name; the name's address
# rotates; in enforce the new address connects and a name never learned is denied.
# Needs a running corrald (make run, or the systemd unit), dnsmasq (make test-deps) and
# root. CORRALCTL and PYTHON may point at other binaries (default: .venv's).
set -eu
cd "$(dirname "$0")/.."
CTL=${CORRALCTL:-.venv/bin/corralctl}
PY=${PYTHON:-.venv/bin/python}
PORT=${PORT:-8443}
AGENT=${AGENT_NAME:-names-demo}
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
pid=""
serve() {  # serve ADDRESS: api.example.com -> ADDRESS, other.example.com -> 127.0.0.84
	[ -z "$pid" ] || { kill "$pid"; wait "$pid" 2>/dev/null || true; }
	"$DNSMASQ" --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
		--bind-interfaces --listen-address=127.0.0.77 --port=53 --local-ttl=60 \
		--pid-file= --user=nobody --log-facility=- \
		--host-record=api.example.com,"$1" --host-record=other.example.com,127.0.0.84 \
		2>/dev/null &
	pid=$!
	sleep 0.5
}
"$PY" -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', $PORT)); s.listen(64)
while True:
    c, _ = s.accept(); c.close()
" &
listener=$!
trap 'kill $listener ${pid:-} 2>/dev/null || true' EXIT
run() { echo "\$ corralctl run --agent $AGENT -- python3 examples/name_agent.py $*"; "$CTL" run --agent "$AGENT" -- "$PY" examples/name_agent.py "$@" || true; }
say() { echo "\$ corralctl $*"; "$CTL" "$@"; echo; }
# a command's table, its header and its connect rows only
connects() { echo "\$ corralctl $* | grep -E 'OBJECT|connect'"; "$CTL" "$@" | grep -E 'OBJECT|connect'; echo; }

echo "# 1. learn: api.example.com answers 127.0.0.81"
serve 127.0.0.81
run api.example.com "$PORT"
run api.example.com "$PORT"
sleep 1
connects baseline "$AGENT"
echo "# 2. the name's address rotates to 127.0.0.82; connect goes to enforce"
serve 127.0.0.82
say mode "$AGENT" --connect enforce
run api.example.com "$PORT"
echo "# 3. a name the agent never used, and an address no answer gave"
run other.example.com "$PORT"
echo "\$ corralctl run --agent $AGENT -- python3 -c 'connect to 127.0.0.83:$PORT'"
"$CTL" run --agent "$AGENT" -- "$PY" -c "
import socket
try:
    socket.create_connection(('127.0.0.83', $PORT), timeout=5); print('connected')
except OSError as e:
    print(e)" || true
sleep 1
connects events --agent "$AGENT" --limit 50
say diff "$AGENT"
echo "# 4. the operator allows the new name (not its address of the day)"
say accept "$AGENT" --connect "other.example.com:$PORT"
run other.example.com "$PORT"
