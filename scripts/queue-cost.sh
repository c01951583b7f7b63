#!/usr/bin/env bash
# Instructions redis-server spends per job on the queue's enqueue, claim and ack, next to the
# plain XADD / XREADGROUP / XACK they wrap. Counted by callgrind, so the figures repeat to
# within a fraction of a percent on a machine whose timings swing by 20% (BENCHMARKS.md).
#
# Usage: scripts/queue-cost.sh [jobs]   (default 2000; needs valgrind and redis-server)
set -euo pipefail
jobs="${1:-2000}"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/queue-cost.sh [jobs]   (a positive number; default 2000)" >&2; exit 2; }
cd "$(dirname "$0")/.."
for tool in valgrind callgrind_annotate callgrind_control redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "queue-cost: $tool is missing (apt-get install valgrind redis-server)" >&2; exit 1; }
done
cargo build --quiet --release -p raibid-queue --example redis_cost
server=""
work=""
# A failed driver run must not leave redis-server running under valgrind.
cleanup() {
    if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; fi
    if [[ -z "${QUEUE_COST_KEEP:-}" && -n "$work" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
# QUEUE_COST_KEEP=<dir> keeps the callgrind files there, for callgrind_annotate.
if [[ -n "${QUEUE_COST_KEEP:-}" ]]; then
    work="$QUEUE_COST_KEEP"
    mkdir -p "$work"
else
    work="$(mktemp -d)"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'; }

printf '%-6s %12s %12s %12s %12s\n' MODE ENQUEUE CLAIM ACK "PER JOB"
for mode in raw queue; do
    (cd "$work" && exec valgrind --tool=callgrind --callgrind-out-file="$work/$mode.out" \
        redis-server --port "$port" --save '' --appendonly no >"$work/$mode.log" 2>&1) &
    server=$!
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    ./target/release/examples/redis_cost "redis://127.0.0.1:$port" "$mode" "$jobs"
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$server" || true
    server=""
    per_phase=()
    # Dumps are numbered in the order the driver asked for them: start, enqueue, claim, ack.
    for part in 2 3 4; do
        per_phase+=("$(( $(total "$work/$mode.out.$part") / jobs ))")
    done
    sum=$(( per_phase[0] + per_phase[1] + per_phase[2] ))
    printf '%-6s %12s %12s %12s %12s\n' "$mode" "${per_phase[@]}" "$sum"
done
echo "(instructions in redis-server per job, $jobs jobs, $(redis-server --version | awk '{print $3}'))"
