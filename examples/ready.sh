# Sourced by the example scripts: start servers in the background, wait until
# each answers, and when one does not, say which and keep its log.
#   start NAME LOGFILE CMD...   runs CMD with stderr and stdout in LOGFILE
#   wait_ready NAME URL         waits up to 10 s for URL to answer 200
# On failure the logs stay in $tmp (the caller's temporary folder), which the
# caller's cleanup must then leave alone: it checks $keep_logs.
# (bash 3.2, as macOS ships it: no associative arrays, so pid_NAME/log_NAME.)
keep_logs=0

start() {
  local name=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  printf -v "pid_$name" %s $!
  printf -v "log_$name" %s "$log"
  pids+=($!)
}

wait_ready() {
  local name=$1 url=$2
  for _ in $(seq 1 100); do
    curl -fsS "$url" >/dev/null 2>&1 && return 0
    local pid="pid_$name"
    if ! kill -0 "${!pid}" 2>/dev/null; then
      fail_ready "$name" "exited before it became ready"
    fi
    sleep 0.1
  done
  fail_ready "$name" "did not become ready at $url within 10 s"
}

fail_ready() {
  local name=$1 what=$2 log="log_$name"
  keep_logs=1
  {
    echo "$name $what. Its log (kept in ${!log}):"
    sed 's/^/  | /' "${!log}"
    echo "Is another process using its port? (ss -ltnp shows listeners)"
  } >&2
  exit 1
}
