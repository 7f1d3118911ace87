#!/usr/bin/env bash
# Blue/green on one box: the only code that moves new calls from one colour of the voice agent to the other.
# install.sh runs it for every install and upgrade, systemd runs it when a colour dies (OnFailure=), and
# `make upgrade-drill` runs this very script against real Nginx, with the service manager swapped (--service-cmd).
#
#   switch-colour.sh --release DIR        deploy DIR: start the idle colour on it, wait for its /healthz, point
#                                         Nginx at it, then SIGTERM the old colour (it drains its calls, exits)
#   switch-colour.sh --rollback           the same switch, to the release that ran before the last one
#   switch-colour.sh --failover-from C    colour C died: if it was the active one, bring the other colour up on
#                                         C's release and point Nginx at it (else restart C in place)
#   switch-colour.sh --init               write the Nginx upstream for the active colour (blue if none yet)
#   switch-colour.sh --status             active colour, each colour's release and state
#
# Layout under --app-dir: colours/{blue,green} -> releases/<id> (symlinks), colours/{blue,green}.env (PORT=...),
# colours/active, colours/previous -> the release before the last switch, current -> the active colour's release.
# A colour's symlink is repointed only while that colour is stopped.
set -euo pipefail

APP_DIR="/opt/voice-agent"
NGINX_DIR="/etc/nginx"
PROBE_PORT="8089"
HEALTH_TIMEOUT="120"
SERVICE_CMD=""
NGINX_CMD="nginx"
ACTION=""
ARG=""

usage() { sed -n '2,17p' "$0"; echo "options: --app-dir DIR --nginx-dir DIR --probe-port P --health-timeout S" \
  "--service-cmd CMD (default: systemctl) --nginx-cmd CMD (default: nginx)"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --release) ACTION="release"; ARG="${2:?--release needs a directory}"; shift 2 ;;
    --rollback) ACTION="rollback"; shift ;;
    --failover-from) ACTION="failover"; ARG="${2:?--failover-from needs a colour}"; shift 2 ;;
    --init) ACTION="init"; shift ;;
    --status) ACTION="status"; shift ;;
    --app-dir) APP_DIR="$2"; shift 2 ;;
    --nginx-dir) NGINX_DIR="$2"; shift 2 ;;
    --probe-port) PROBE_PORT="$2"; shift 2 ;;
    --health-timeout) HEALTH_TIMEOUT="$2"; shift 2 ;;
    --service-cmd) SERVICE_CMD="$2"; shift 2 ;;
    --nginx-cmd) NGINX_CMD="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$ACTION" ] || { usage >&2; exit 2; }
[[ "$PROBE_PORT" =~ ^[0-9]+$ && "$HEALTH_TIMEOUT" =~ ^[0-9]+$ ]] || { echo "ports and timeouts are numbers" >&2; exit 2; }
if [ "$ACTION" = failover ] && [ "$ARG" != blue ] && [ "$ARG" != green ]; then
  echo "--failover-from takes blue or green" >&2; exit 2
fi

COLOURS="$APP_DIR/colours"
UPSTREAM="$NGINX_DIR/voice-agent-upstream.conf"
read -r -a NGINX <<< "$NGINX_CMD"
read -r -a SERVICE <<< "$SERVICE_CMD"

log() { printf '==> switch: %s\n' "$*"; }
die() { printf '!!! switch: %s\n' "$*" >&2; exit 1; }
other() { if [ "$1" = blue ]; then echo green; else echo blue; fi; }
port_of() { sed -n 's/^PORT=\([0-9][0-9]*\)$/\1/p' "$COLOURS/$1.env" | tail -n 1; }
active_colour() {  # blue, green, or nothing (no install yet, or a file that says anything else)
  local colour=""
  [ -f "$COLOURS/active" ] && colour="$(head -c 16 "$COLOURS/active" | tr -dc 'a-z')"
  case "$colour" in
    blue|green) echo "$colour" ;;
    "") [ ! -s "$COLOURS/active" ] || die "$COLOURS/active names neither blue nor green: fix it by hand" ;;
    *) die "$COLOURS/active names neither blue nor green: fix it by hand" ;;
  esac
}
release_of() { readlink -f "$COLOURS/$1" 2>/dev/null || true; }

# svc VERB COLOUR, VERB one of start, stop (waits for the drain), stop-nowait, state, enable, disable.
svc() {
  if [ ${#SERVICE[@]} -gt 0 ]; then "${SERVICE[@]}" "$1" "$2"; return; fi
  local unit="voice-agent@$2.service"
  case "$1" in
    start) systemctl start "$unit" ;;
    stop) systemctl stop "$unit" ;;
    stop-nowait) systemctl stop --no-block "$unit" ;;
    state) systemctl show -p ActiveState --value "$unit" ;;
    enable) systemctl enable --quiet "$unit" ;;
    disable) systemctl disable --quiet "$unit" ;;
  esac
}

running() {  # running COLOUR: the process is up or still draining
  case "$(svc state "$1")" in active|activating|deactivating|reloading) return 0 ;; *) return 1 ;; esac
}

wait_healthy() {  # wait_healthy COLOUR: its own /healthz answers 200 (or "not_configured": no credentials yet)
  local port deadline answer
  port="$(port_of "$1")"
  deadline=$((SECONDS + HEALTH_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    answer="$(curl -sS --max-time 2 -w ' %{http_code}' "http://127.0.0.1:$port/healthz" 2>/dev/null || true)"
    case "$answer" in
      *" 200") return 0 ;;
      *not_configured*" 503") log "$1 is up but not configured (credentials missing): switching anyway"; return 0 ;;
    esac
    running "$1" || return 1  # it exited: no point waiting
    sleep 0.2
  done
  return 1
}

write_upstream() {  # write_upstream COLOUR: new connections go to this colour after the next reload
  local port tmp
  port="$(port_of "$1")"
  [ -n "$port" ] || die "no PORT in $COLOURS/$1.env"
  tmp="$(mktemp "$UPSTREAM.XXXXXX")"
  printf '# Written by switch-colour.sh: the colour that takes new calls. Change it with switch-colour.sh.\n' > "$tmp"
  printf 'upstream voice_agent {\n    server 127.0.0.1:%s;\n}\n' "$port" >> "$tmp"
  printf 'map $host $voice_agent_colour {\n    default "%s";\n}\n' "$1" >> "$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$UPSTREAM"
}

wait_switched() {  # wait_switched COLOUR: 5 new connections in a row reach the new configuration
  local streak=0 deadline=$((SECONDS + 30))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$PROBE_PORT/colour" 2>/dev/null)" = "$1" ]; then
      streak=$((streak + 1))
      [ "$streak" -ge 5 ] && return 0
    else
      streak=0
    fi
    sleep 0.05
  done
  return 1
}

reload_nginx() {  # quiet unless it fails (nginx -s always prints a notice)
  local out
  out="$("${NGINX[@]}" -s reload 2>&1)" || { printf '%s\n' "$out" >&2; return 1; }
}

point_nginx_at() {  # point_nginx_at COLOUR: test the configuration, reload, and wait until it took effect
  write_upstream "$1"
  "${NGINX[@]}" -t -q || return 1
  reload_nginx || return 1
  wait_switched "$1"
}

mark_active() {  # mark_active COLOUR: the record, the boot-time unit and `current` follow the new colour
  local tmp
  tmp="$(mktemp "$COLOURS/active.XXXXXX")"
  echo "$1" > "$tmp"
  mv -f "$tmp" "$COLOURS/active"
  ln -sfn "$(release_of "$1")" "$APP_DIR/current"
  svc enable "$1"
  svc disable "$(other "$1")"
}

lock() {  # one switch at a time (an upgrade and a failover must not interleave)
  exec 9> "$COLOURS/.lock"
  flock -w 300 9 || die "another switch-colour.sh has held the lock for 5 minutes"
}

deploy() {  # deploy RELEASE_DIR
  local release="$1" active idle
  [ -x "$release/.venv/bin/python" ] || die "$release has no .venv/bin/python"
  active="$(active_colour)"
  if [ -z "$active" ]; then
    idle="blue"
  else
    idle="$(other "$active")"
    if running "$idle"; then  # still draining the calls of the previous switch: they finish first
      log "$idle is still draining its calls from the previous switch: waiting for it to exit"
      svc stop "$idle"
    fi
  fi
  lock
  [ "$(active_colour)" = "$active" ] || die "the active colour changed while waiting: run again"
  running "$idle" && die "$idle started again while waiting: run again"
  local before
  before="$(release_of "$idle")"
  ln -sfn "$release" "$COLOURS/$idle"
  log "starting $idle on $(basename "$release") (port $(port_of "$idle"))"
  svc start "$idle" || true
  if ! wait_healthy "$idle"; then
    svc stop "$idle" || true
    if [ -n "$before" ]; then ln -sfn "$before" "$COLOURS/$idle"; fi
    die "$idle did not answer /healthz within ${HEALTH_TIMEOUT}s: nothing switched${active:+, $active keeps serving}"
  fi
  log "$idle is healthy: pointing nginx at it"
  if ! point_nginx_at "$idle"; then
    if [ -n "$active" ]; then write_upstream "$active"; reload_nginx || true; fi
    svc stop "$idle" || true
    die "nginx did not take the new upstream: nothing switched"
  fi
  if [ -n "$active" ]; then ln -sfn "$(release_of "$active")" "$COLOURS/previous"; fi
  mark_active "$idle"
  if [ -n "$active" ]; then
    log "new calls go to $idle; $active drains its calls in progress and exits"
    svc stop-nowait "$active"
  else
    log "first install: $idle serves"
  fi
}

failover() {  # failover FAILED_COLOUR
  local failed="$1" spare release
  lock
  if [ "$(active_colour)" != "$failed" ]; then
    log "$failed was not the active colour: nothing to do"
    return 0
  fi
  spare="$(other "$failed")"
  release="$(release_of "$failed")"
  if ! running "$spare" && [ -n "$release" ]; then
    ln -sfn "$release" "$COLOURS/$spare"
    log "$failed failed: starting $spare on $(basename "$release")"
    svc start "$spare" || true
    if wait_healthy "$spare" && point_nginx_at "$spare"; then
      mark_active "$spare"
      log "new calls go to $spare"
      return 0
    fi
    log "$spare did not come up: restarting $failed in place"
    svc stop "$spare" || true
    write_upstream "$failed"
    reload_nginx || true
  fi
  svc start "$failed" || true
  wait_healthy "$failed" || die "neither colour is healthy (will be retried)"
  log "$failed serves again"
}

case "$ACTION" in
  init)
    active="$(active_colour)"  # stops here if colours/active names something else
    if [ -f "$UPSTREAM" ] && [ -n "$active" ]; then exit 0; fi
    write_upstream "${active:-blue}"
    ;;
  release) deploy "$(readlink -f "$ARG")" ;;
  rollback)
    previous="$(release_of previous)"
    [ -n "$previous" ] && [ -d "$previous" ] || die "no previous release to roll back to"
    log "rolling back to $(basename "$previous")"
    deploy "$previous"
    ;;
  failover) failover "$ARG" ;;
  status)
    echo "active: $(active_colour | grep . || echo none)"
    for colour in blue green; do
      echo "$colour: $(svc state "$colour"), port $(port_of "$colour"), release $(release_of "$colour" | grep . || echo none)"
    done
    echo "previous: $(release_of previous | grep . || echo none)"
    ;;
esac
