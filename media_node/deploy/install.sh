#!/usr/bin/env bash
# Install or upgrade the voice agent on Ubuntu 22.04/24.04 behind Nginx (+ Let's Encrypt), run by systemd.
# Every run installs the source beside the running release and switches to it blue/green (switch-colour.sh):
# the idle colour starts on the new release, Nginx sends new calls to it once its /healthz answers, and the
# old colour drains its calls and exits. No call is cut, none is refused. An existing .env is kept; only the
# keys given with --env change. The certificate is obtained once and kept across upgrades.
#
#   sudo bash media_node/deploy/install.sh --domain voice.example.com --email ops@example.com
#   sudo bash media_node/deploy/install.sh --mode media --domain media.example.com --email ops@example.com \
#        --env CALL_STORE=dynamodb://calls --env AWS_REGION=us-east-1 --non-interactive
#   sudo bash /opt/voice-agent/bin/switch-colour.sh --rollback          # back to the previous release
#   bash media_node/deploy/install.sh --render-only /tmp/out --domain voice.example.com   # templates only
set -euo pipefail

MODE="all-in-one"            # all-in-one | media
DOMAIN=""
EMAIL=""
APP_DIR="/opt/voice-agent"
APP_USER="voice"
BLUE_PORT="8081"             # green listens on BLUE_PORT + 1
PROBE_PORT=""                # nginx's loopback probe; default BLUE_PORT + 8
HTTP_PORT="80"
NGINX_DIR="/etc/nginx"
INTERACTIVE=1
RENDER_ONLY=""
RENDER_TLS=0
GRACE="600"
MAX_CALL="1800"
RELEASE_ID=""
FLEET_ASG=""
FLEET_HOOK="drain"
CERT_DIR=""
ENV_UPDATES=()
SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEPLOY_DIR="$SOURCE_DIR/media_node/deploy"
ACME_ROOT="/var/www/voice-agent-acme"
SYSTEMD_DIR="/etc/systemd/system"
SECRET_KEYS=(TWILIO_ACCOUNT_SID TWILIO_AUTH_TOKEN GEMINI_API_KEY API_KEY STREAM_TOKEN_SECRET)
KEEP_RELEASES=3

usage() {
  sed -n '2,13p' "$0"
  echo "options: --mode all-in-one|media --domain D --email E --app-dir DIR --user U --port BLUE_PORT"
  echo "         --env KEY=VALUE (repeatable) --grace SECONDS --non-interactive --release-id ID"
  echo "         --fleet-asg NAME [--fleet-hook NAME] (fleet node behind the NLB: no certificate, fleet agent)"
  echo "         --render-only DIR [--tls] [--cert-dir DIR] [--nginx-dir DIR] [--http-port P] [--probe-port P]"
  echo "         [--max-call-seconds S] [--acme-root DIR] [--systemd-dir DIR]"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE="$2"; shift 2 ;;
    --domain) DOMAIN="$2"; shift 2 ;;
    --email) EMAIL="$2"; shift 2 ;;
    --app-dir) APP_DIR="$2"; shift 2 ;;
    --user) APP_USER="$2"; shift 2 ;;
    --port) BLUE_PORT="$2"; shift 2 ;;
    --probe-port) PROBE_PORT="$2"; shift 2 ;;
    --http-port) HTTP_PORT="$2"; shift 2 ;;
    --nginx-dir) NGINX_DIR="$2"; shift 2 ;;
    --grace) GRACE="$2"; shift 2 ;;
    --max-call-seconds) MAX_CALL="$2"; shift 2 ;;
    --env) ENV_UPDATES+=("$2"); shift 2 ;;
    --release-id) RELEASE_ID="$2"; shift 2 ;;
    --fleet-asg) FLEET_ASG="$2"; shift 2 ;;
    --fleet-hook) FLEET_HOOK="$2"; shift 2 ;;
    --non-interactive) INTERACTIVE=0; shift ;;
    --render-only) RENDER_ONLY="$2"; shift 2 ;;
    --tls) RENDER_TLS=1; shift ;;
    --cert-dir) CERT_DIR="$2"; shift 2 ;;
    --acme-root) ACME_ROOT="$2"; shift 2 ;;
    --systemd-dir) SYSTEMD_DIR="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

case "$MODE" in
  all-in-one) MODULE="all_in_one"; REQUIREMENTS="requirements.txt" ;;
  media) MODULE="media_node"; REQUIREMENTS="media_node/requirements.txt" ;;
  *) echo "--mode must be all-in-one or media" >&2; exit 2 ;;
esac
for number in "$BLUE_PORT" "$HTTP_PORT" "$GRACE" "$MAX_CALL" "${PROBE_PORT:-0}"; do
  [[ "$number" =~ ^[0-9]+$ ]] || { echo "--port, --http-port, --probe-port, --grace, --max-call-seconds take numbers" >&2; exit 2; }
done
[ "$BLUE_PORT" -ge 1 ] && [ "$BLUE_PORT" -le 65000 ] || { echo "--port must be 1-65000" >&2; exit 2; }
[[ -z "$RELEASE_ID" || "$RELEASE_ID" =~ ^[A-Za-z0-9._-]{1,80}$ ]] || { echo "--release-id: letters, digits, . _ -" >&2; exit 2; }
[[ "$FLEET_ASG$FLEET_HOOK" =~ ^[A-Za-z0-9._-]*$ ]] || { echo "--fleet-asg/--fleet-hook: letters, digits, . _ -" >&2; exit 2; }
GREEN_PORT=$((BLUE_PORT + 1))
PROBE_PORT="${PROBE_PORT:-$((BLUE_PORT + 8))}"
STOP_TIMEOUT=$((GRACE + 30))
CERT_DIR="${CERT_DIR:-/etc/letsencrypt/live/${DOMAIN:-none}}"
CAPACITY="100"

log() { printf '==> %s\n' "$*"; }

render() {  # render TEMPLATE OUT [tls]: fill {{PLACEHOLDERS}} (values contain no '|'); keep the #tls: or #http: lines
  local keep="http" drop="tls" shutdown=$((GRACE > MAX_CALL ? GRACE + 60 : MAX_CALL + 60))
  if [ "${3:-}" = tls ]; then keep="tls"; drop="http"; fi
  sed -e "/^#$drop:/d" -e "s|^#$keep:||" \
      -e "s|{{SERVER_NAME}}|${DOMAIN:-_}|g" -e "s|{{APP_DIR}}|$APP_DIR|g" -e "s|{{APP_USER}}|$APP_USER|g" \
      -e "s|{{MODULE}}|$MODULE|g" -e "s|{{MODE}}|$MODE|g" -e "s|{{STOP_TIMEOUT}}|$STOP_TIMEOUT|g" \
      -e "s|{{NGINX_DIR}}|$NGINX_DIR|g" -e "s|{{HTTP_PORT}}|$HTTP_PORT|g" -e "s|{{PROBE_PORT}}|$PROBE_PORT|g" \
      -e "s|{{ACME_ROOT}}|$ACME_ROOT|g" -e "s|{{CERT_DIR}}|$CERT_DIR|g" -e "s|{{WORKER_SHUTDOWN}}|$shutdown|g" \
      -e "s|{{BLUE_PORT}}|$BLUE_PORT|g" -e "s|{{GREEN_PORT}}|$GREEN_PORT|g" -e "s|{{CAPACITY}}|$CAPACITY|g" \
      -e "s|{{FLEET_ASG}}|${FLEET_ASG:-none}|g" -e "s|{{FLEET_HOOK}}|$FLEET_HOOK|g" "$1" > "$2"
}

render_all() {  # render_all DIR [tls]: every file install.sh writes, into one directory
  render "$DEPLOY_DIR/nginx-site.conf.template" "$1/voice-agent.conf" "${2:-}"
  render "$DEPLOY_DIR/nginx-app.conf.template" "$1/voice-agent-app.conf"
  render "$DEPLOY_DIR/nginx-main.conf.template" "$1/90-voice-agent.conf"
  render "$DEPLOY_DIR/voice-agent@.service.template" "$1/voice-agent@.service"
  render "$DEPLOY_DIR/voice-agent-failover@.service.template" "$1/voice-agent-failover@.service"
  render "$DEPLOY_DIR/voice-agent-fleet.service.template" "$1/voice-agent-fleet.service"
}

if [ -n "$RENDER_ONLY" ]; then
  mkdir -p "$RENDER_ONLY"
  render_all "$RENDER_ONLY" "$([ "$RENDER_TLS" = 1 ] && echo tls)"
  log "rendered into $RENDER_ONLY"
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

log "packages"
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600 -qq)  # a fresh instance may still run unattended-upgrades
"${APT[@]}" update
PYTHON=""
for candidate in python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    PYTHON="$candidate"; break
  fi
done
if [ -z "$PYTHON" ]; then  # Ubuntu 22.04 ships 3.10; 3.11 is in its universe repository
  "${APT[@]}" install -y python3.11 python3.11-venv >/dev/null
  PYTHON=python3.11
fi
PYVER="$("$PYTHON" -c 'import sys; print(f"3.{sys.version_info.minor}")')"
# build-essential and the headers compile the audio kernel (setup.py, when the release has one)
PACKAGES=("python$PYVER-venv" "python$PYVER-dev" build-essential nginx rsync curl util-linux)
[ -n "$FLEET_ASG" ] || PACKAGES+=(certbot)
"${APT[@]}" install -y "${PACKAGES[@]}" >/dev/null

RELEASE_ID="${RELEASE_ID:-$(date -u +%Y%m%d%H%M%S)}"
RELEASE="$APP_DIR/releases/$RELEASE_ID"
log "release $RELEASE_ID ($MODE) in $RELEASE"
id -u "$APP_USER" >/dev/null 2>&1 || useradd --system --home-dir "$APP_DIR" --shell /usr/sbin/nologin "$APP_USER"
mkdir -p "$APP_DIR/releases" "$APP_DIR/colours" "$APP_DIR/bin" "$APP_DIR/data" "$ACME_ROOT"
rsync -a --delete --exclude .git --exclude .venv --exclude node_modules --exclude cdk.out --exclude data \
  --exclude .env --exclude 'bench/.venv' --exclude tests --exclude '__pycache__' "$SOURCE_DIR/" "$RELEASE/"
[ -x "$RELEASE/.venv/bin/python" ] || "$PYTHON" -m venv "$RELEASE/.venv"
"$RELEASE/.venv/bin/pip" install -q --upgrade pip
"$RELEASE/.venv/bin/pip" install -q -r "$RELEASE/$REQUIREMENTS"
if [ -f "$RELEASE/setup.py" ]; then  # the compiled audio kernel, in place; without it media_node uses numpy
  SETUPTOOLS="$(sed -n 's/^requires = \["\(setuptools==[0-9.]*\)"\]$/\1/p' "$RELEASE/pyproject.toml")"
  if ! { "$RELEASE/.venv/bin/pip" install -q "${SETUPTOOLS:-setuptools}" \
         && (cd "$RELEASE" && .venv/bin/python setup.py -q build_ext --inplace >/dev/null 2>&1); }; then
    echo "!!! the audio kernel did not build: the media node runs its numpy fallback (more CPU per call)" >&2
  fi
fi
touch "$RELEASE"  # its age orders the pruning below
chmod -R go-w "$RELEASE"

log "configuration ($APP_DIR/.env, mode 600, read by systemd; secrets are never printed)"
ENV_FILE="$APP_DIR/.env"
touch "$ENV_FILE"
chown root:root "$ENV_FILE"
chmod 600 "$ENV_FILE"
set_env() {  # set_env KEY VALUE: replace or append one line
  local key="$1" value="$2" tmp
  tmp="$(mktemp)"
  grep -v "^${key}=" "$ENV_FILE" > "$tmp" || true
  printf '%s=%s\n' "$key" "$value" >> "$tmp"
  cat "$tmp" > "$ENV_FILE"
  rm -f "$tmp"
}
has_env() { grep -q "^$1=." "$ENV_FILE"; }
env_value() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1; }
sed -i '/^PORT=/d' "$ENV_FILE"  # each colour has its own port (colours/<colour>.env)
set_env HOST 127.0.0.1
set_env DRAIN_GRACE_SECONDS "$GRACE"
if [ -n "$DOMAIN" ]; then
  has_env PUBLIC_URL || set_env PUBLIC_URL "https://$DOMAIN"
  has_env MEDIA_STREAM_URL || set_env MEDIA_STREAM_URL "wss://$DOMAIN/stream"
fi
has_env CALL_STORE || set_env CALL_STORE "sqlite:///$APP_DIR/data/calls.db"
for pair in "${ENV_UPDATES[@]+"${ENV_UPDATES[@]}"}"; do
  [[ "$pair" =~ ^[A-Z_][A-Z0-9_]*=.*$ ]] || { echo "--env expects KEY=VALUE" >&2; exit 2; }
  set_env "${pair%%=*}" "${pair#*=}"
done
for key in "${SECRET_KEYS[@]}"; do
  if has_env "$key" || has_env "${key}_SECRET_ARN"; then continue; fi
  if [ "$key" = STREAM_TOKEN_SECRET ] || [ "$key" = API_KEY ]; then
    set_env "$key" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"  # ours to generate
  elif [ "$INTERACTIVE" = 1 ] && [ -t 0 ]; then
    read -r -s -p "$key (input hidden, empty to skip): " value; echo
    [ -n "$value" ] && set_env "$key" "$value"
  fi
done
[[ "$(env_value MAX_CALL_SECONDS)" =~ ^[0-9]+$ ]] && MAX_CALL="$(env_value MAX_CALL_SECONDS)"
[[ "$(env_value MAX_CONCURRENT_CALLS)" =~ ^[0-9]+$ ]] && CAPACITY="$(env_value MAX_CONCURRENT_CALLS)"
printf 'PORT=%s\n' "$BLUE_PORT" > "$APP_DIR/colours/blue.env"
printf 'PORT=%s\n' "$GREEN_PORT" > "$APP_DIR/colours/green.env"
chown -R "$APP_USER:$APP_USER" "$APP_DIR/data"
install -m 755 "$DEPLOY_DIR/switch-colour.sh" "$APP_DIR/bin/switch-colour.sh.new"
mv -f "$APP_DIR/bin/switch-colour.sh.new" "$APP_DIR/bin/switch-colour.sh"
SWITCH=("$APP_DIR/bin/switch-colour.sh" --app-dir "$APP_DIR" --nginx-dir "$NGINX_DIR" --probe-port "$PROBE_PORT")

log "systemd units (voice-agent@blue, voice-agent@green${FLEET_ASG:+, voice-agent-fleet})"
RENDERED="$(mktemp -d)"
TLS=""
[ -n "$DOMAIN" ] && [ -z "$FLEET_ASG" ] && [ -f "$CERT_DIR/fullchain.pem" ] && TLS="tls"
render_all "$RENDERED" "$TLS"
install -m 644 "$RENDERED/voice-agent@.service" "$RENDERED/voice-agent-failover@.service" "$SYSTEMD_DIR/"
[ -z "$FLEET_ASG" ] || install -m 644 "$RENDERED/voice-agent-fleet.service" "$SYSTEMD_DIR/"
systemctl daemon-reload

log "nginx site${TLS:+ (TLS)}"
install_site() {  # the site, its locations and the main-context settings; nginx -t before anything reloads
  mkdir -p "$NGINX_DIR/snippets" "$NGINX_DIR/sites-available" "$NGINX_DIR/sites-enabled"
  install -m 644 "$RENDERED/voice-agent-app.conf" "$NGINX_DIR/snippets/voice-agent-app.conf"
  install -m 644 "$RENDERED/voice-agent.conf" "$NGINX_DIR/sites-available/voice-agent.conf"
  ln -sf "$NGINX_DIR/sites-available/voice-agent.conf" "$NGINX_DIR/sites-enabled/voice-agent.conf"
  if [ -d "$NGINX_DIR/modules-enabled" ]; then
    install -m 644 "$RENDERED/90-voice-agent.conf" "$NGINX_DIR/modules-enabled/90-voice-agent.conf"
  else
    echo "!!! $NGINX_DIR/modules-enabled is missing: set 'worker_shutdown_timeout' in nginx.conf yourself" >&2
  fi
  "${SWITCH[@]}" --init
  nginx -t -q
}
rm -f "$NGINX_DIR/sites-enabled/default"
install_site
systemctl is-active --quiet nginx || systemctl start nginx  # never restart it: a restart cuts every call

LEGACY=""
if [ -f "$SYSTEMD_DIR/voice-agent.service" ] && systemctl is-enabled --quiet voice-agent 2>/dev/null; then
  LEGACY="voice-agent"  # a single-process install from before blue/green: it drains like an old colour
fi

log "switching to release $RELEASE_ID"
"${SWITCH[@]}" --release "$RELEASE"
if [ -n "$LEGACY" ]; then
  log "the single-process service of the previous install drains its calls and stops for good"
  systemctl disable --quiet "$LEGACY"
  systemctl stop --no-block "$LEGACY"
fi

if [ -n "$FLEET_ASG" ]; then
  systemctl enable --quiet voice-agent-fleet
  systemctl restart voice-agent-fleet
elif [ -n "$DOMAIN" ] && [ -n "$EMAIL" ] && [ -z "$TLS" ]; then
  log "certificate for $DOMAIN (once: later upgrades keep it; certbot's timer renews it)"
  if certbot certonly --webroot --webroot-path "$ACME_ROOT" -d "$DOMAIN" -m "$EMAIL" --agree-tos \
       --non-interactive --keep-until-expiring --deploy-hook "nginx -s reload"; then
    render_all "$RENDERED" tls
    install_site
    nginx -s reload  # adds the 443 server; calls in progress stay on the old workers
  else
    echo "!!! certbot failed: point the DNS A record of $DOMAIN at this host, then re-run this script." >&2
  fi
elif [ -z "$DOMAIN" ] || [ -z "$EMAIL" ]; then
  echo "!!! no --domain/--email: serving plain HTTP. Twilio needs https/wss: re-run with both." >&2
fi
rm -rf "$RENDERED"

log "pruning releases (keeping the newest $KEEP_RELEASES and every one a colour points at)"
keep=()
for link in blue green previous; do keep+=("$(readlink -f "$APP_DIR/colours/$link" 2>/dev/null || true)"); done
while IFS= read -r old; do
  [[ " ${keep[*]} " == *" $old "* ]] || rm -rf "$old"
done < <(find "$APP_DIR/releases" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn \
         | tail -n +$((KEEP_RELEASES + 1)) | cut -d' ' -f2-)

log "self-check through nginx"
for _ in $(seq 1 30); do
  if answer="$(curl -fsS "http://127.0.0.1:$PROBE_PORT/healthz" 2>/dev/null)"; then
    log "healthy ($("${SWITCH[@]}" --status | head -n 1)): $answer"
    exit 0
  fi
  sleep 1
done
echo "!!! /healthz did not answer through nginx: journalctl -u 'voice-agent@*' -n 50" >&2
exit 1
