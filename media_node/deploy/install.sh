#!/usr/bin/env bash
# Install or upgrade the voice agent on Ubuntu 22.04/24.04 behind Nginx + Certbot, run by systemd.
# Idempotent: re-run it to upgrade (code, dependencies, unit, site); an existing .env is kept and only
# the keys given with --env are updated.
#
#   sudo bash media_node/deploy/install.sh --domain voice.example.com --email ops@example.com
#   sudo bash media_node/deploy/install.sh --mode media --domain media.example.com --email ops@example.com \
#        --env CALL_STORE=dynamodb://calls --env AWS_REGION=us-east-1 --non-interactive
#   bash media_node/deploy/install.sh --render-only /tmp/out --domain voice.example.com   # templates only
set -euo pipefail

MODE="all-in-one"            # all-in-one | media
DOMAIN=""
EMAIL=""
APP_DIR="/opt/voice-agent"
APP_USER="voice"
APP_PORT="8080"
INTERACTIVE=1
RENDER_ONLY=""
GRACE="600"
ENV_UPDATES=()
SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEPLOY_DIR="$SOURCE_DIR/media_node/deploy"
SECRET_KEYS=(TWILIO_ACCOUNT_SID TWILIO_AUTH_TOKEN GEMINI_API_KEY API_KEY STREAM_TOKEN_SECRET)

usage() {
  sed -n '2,12p' "$0"
  echo "options: --mode all-in-one|media --domain D --email E --app-dir DIR --user U --port P"
  echo "         --env KEY=VALUE (repeatable) --grace SECONDS --non-interactive --render-only DIR"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE="$2"; shift 2 ;;
    --domain) DOMAIN="$2"; shift 2 ;;
    --email) EMAIL="$2"; shift 2 ;;
    --app-dir) APP_DIR="$2"; shift 2 ;;
    --user) APP_USER="$2"; shift 2 ;;
    --port) APP_PORT="$2"; shift 2 ;;
    --grace) GRACE="$2"; shift 2 ;;
    --env) ENV_UPDATES+=("$2"); shift 2 ;;
    --non-interactive) INTERACTIVE=0; shift ;;
    --render-only) RENDER_ONLY="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

case "$MODE" in
  all-in-one) MODULE="all_in_one"; REQUIREMENTS="requirements.txt" ;;
  media) MODULE="media_node"; REQUIREMENTS="media_node/requirements.txt" ;;
  *) echo "--mode must be all-in-one or media" >&2; exit 2 ;;
esac
[[ "$APP_PORT" =~ ^[0-9]+$ ]] || { echo "--port must be a number" >&2; exit 2; }
[[ "$GRACE" =~ ^[0-9]+$ ]] || { echo "--grace must be a number of seconds" >&2; exit 2; }
STOP_TIMEOUT=$((GRACE + 30))

log() { printf '==> %s\n' "$*"; }

render() {  # render TEMPLATE OUT: fill {{PLACEHOLDERS}} (values contain no '|')
  sed -e "s|{{SERVER_NAME}}|${DOMAIN:-_}|g" -e "s|{{APP_PORT}}|$APP_PORT|g" -e "s|{{APP_DIR}}|$APP_DIR|g" \
      -e "s|{{APP_USER}}|$APP_USER|g" -e "s|{{MODULE}}|$MODULE|g" -e "s|{{MODE}}|$MODE|g" \
      -e "s|{{STOP_TIMEOUT}}|$STOP_TIMEOUT|g" "$1" > "$2"
}

if [ -n "$RENDER_ONLY" ]; then
  mkdir -p "$RENDER_ONLY"
  render "$DEPLOY_DIR/nginx-site.conf.template" "$RENDER_ONLY/voice-agent.conf"
  render "$DEPLOY_DIR/voice-agent.service.template" "$RENDER_ONLY/voice-agent.service"
  log "rendered into $RENDER_ONLY"
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

log "packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
PYTHON=""
for candidate in python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    PYTHON="$candidate"; break
  fi
done
if [ -z "$PYTHON" ]; then  # Ubuntu 22.04 ships 3.10; 3.11 is in its universe repository
  apt-get install -y -qq python3.11 python3.11-venv >/dev/null
  PYTHON=python3.11
fi
apt-get install -y -qq "$("$PYTHON" -c 'import sys; print(f"python3.{sys.version_info.minor}-venv")')" \
  nginx certbot python3-certbot-nginx rsync curl >/dev/null

log "user and code ($MODE) in $APP_DIR"
id -u "$APP_USER" >/dev/null 2>&1 || useradd --system --home-dir "$APP_DIR" --shell /usr/sbin/nologin "$APP_USER"
mkdir -p "$APP_DIR/data"
rsync -a --delete --exclude .git --exclude .venv --exclude node_modules --exclude cdk.out --exclude data \
  --exclude .env --exclude 'bench/.venv' --exclude tests "$SOURCE_DIR/" "$APP_DIR/"
[ -x "$APP_DIR/.venv/bin/python" ] || "$PYTHON" -m venv "$APP_DIR/.venv"
"$APP_DIR/.venv/bin/pip" install -q --upgrade pip
"$APP_DIR/.venv/bin/pip" install -q -r "$APP_DIR/$REQUIREMENTS"

log "configuration ($APP_DIR/.env, mode 600; secrets are never printed)"
ENV_FILE="$APP_DIR/.env"
touch "$ENV_FILE"
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
set_env HOST 127.0.0.1
set_env PORT "$APP_PORT"
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
chown -R "$APP_USER:$APP_USER" "$APP_DIR"

log "systemd unit"
render "$DEPLOY_DIR/voice-agent.service.template" /etc/systemd/system/voice-agent.service
systemctl daemon-reload
systemctl enable --quiet voice-agent
systemctl restart voice-agent

log "nginx site"
render "$DEPLOY_DIR/nginx-site.conf.template" /etc/nginx/sites-available/voice-agent.conf
ln -sf /etc/nginx/sites-available/voice-agent.conf /etc/nginx/sites-enabled/voice-agent.conf
rm -f /etc/nginx/sites-enabled/default
nginx -t -q
systemctl reload nginx || systemctl restart nginx

if [ -n "$DOMAIN" ] && [ -n "$EMAIL" ]; then
  log "certificate for $DOMAIN"
  if ! certbot --nginx -d "$DOMAIN" -m "$EMAIL" --agree-tos --non-interactive --redirect --keep-until-expiring; then
    echo "!!! certbot failed: point the DNS A record of $DOMAIN at this host, then re-run this script." >&2
  fi
else
  echo "!!! no --domain/--email: serving plain HTTP. Twilio needs https/wss: re-run with both." >&2
fi

log "self-check through nginx"
for _ in $(seq 1 30); do
  if curl -fsS -H "Host: ${DOMAIN:-localhost}" http://127.0.0.1/healthz >/dev/null 2>&1 \
     || curl -fsSk --resolve "${DOMAIN:-localhost}:443:127.0.0.1" "https://${DOMAIN:-localhost}/healthz" >/dev/null 2>&1; then
    log "healthy: $(curl -fsS http://127.0.0.1:"$APP_PORT"/healthz)"
    exit 0
  fi
  sleep 1
done
echo "!!! /healthz did not answer through nginx: journalctl -u voice-agent -n 50" >&2
exit 1
