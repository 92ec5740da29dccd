#!/usr/bin/env bash
# `make run`: initialise PostgreSQL and RabbitMQ, prepare the dev tenant and its kept API key, start every
# service (honcho).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export PULSE_API_PORT=${PULSE_API_PORT:-8000}
# Flower takes the broker as a URL: the one Pulse's settings read (PULSE_BROKER_URL, or its parts).
PULSE_BROKER_URL=$(python -c 'from pulse.settings import BrokerSettings; print(BrokerSettings().url)')
export PULSE_BROKER_URL
unset PULSE_BROKER_HOST PULSE_BROKER_PORT PULSE_BROKER_USER PULSE_BROKER_PASSWORD PULSE_BROKER_VHOST
export PULSE_REALTIME_PORT=${PULSE_REALTIME_PORT:-8010}
# The realtime demo page calls the gateway's end-user routes from its own origin.
export PULSE_CORS_ORIGINS=${PULSE_CORS_ORIGINS:-http://localhost:$PULSE_REALTIME_PORT,http://127.0.0.1:$PULSE_REALTIME_PORT}
# The sandbox's webhook receiver is on loopback, which the webhook SSRF guard refuses otherwise: its
# port only, so that a tenant's webhook cannot reach the other local services (metrics, Flower).
sandbox_port=${PULSE_SANDBOX_HTTP_PORT:-8025}
export PULSE_WEBHOOK_ALLOWLIST=${PULSE_WEBHOOK_ALLOWLIST:-127.0.0.1:$sandbox_port,localhost:$sandbox_port}
# Flower's API can shut workers down: it runs behind basic auth, with credentials made on the first
# run and kept (git-ignored) in var/.
flower_credentials=var/flower-credentials
if [[ ! -s $flower_credentials ]]; then
  mkdir -p var
  (umask 077 && python -c 'import secrets; print("pulse:" + secrets.token_urlsafe(16))' >"$flower_credentials")
fi
export FLOWER_BASIC_AUTH=${FLOWER_BASIC_AUTH:-$(<"$flower_credentials")}
# End-user tokens (in-app) are signed with this secret, shared by the gateway and the realtime
# processes: made on the first run and kept (git-ignored) in var/, unless the environment sets one.
jwt_secret=var/jwt-secret
if [[ -z ${PULSE_JWT_SECRET:-} && ! -s $jwt_secret ]]; then
  mkdir -p var
  (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(48))' >"$jwt_secret")
fi
export PULSE_JWT_SECRET=${PULSE_JWT_SECRET:-$(<"$jwt_secret")}

pulse-admin init
pulse-admin create-tenant dev >/dev/null
# A newcomer's first "Try it" send should arrive at any hour: no quiet hours for the dev tenant.
pulse-admin configure-tenant dev --quiet-hours off >/dev/null
key=$(scripts/dev-api-key.sh)

cat <<TXT

  Pulse is starting. Ctrl-C stops every service.

  API               http://localhost:$PULSE_API_PORT          (docs: /docs, /redoc; health: /healthz, /readyz)
  Dashboard         http://localhost:$PULSE_API_PORT/dashboard  (paste the key below)
  Realtime          ws://localhost:$PULSE_REALTIME_PORT/v1/ws?token=…  (in-app WebSocket; metrics: /metrics)
  In-app demo       http://localhost:$PULSE_REALTIME_PORT/demo?gateway=http://localhost:$PULSE_API_PORT  (paste the key below)
  Metrics           http://localhost:$PULSE_API_PORT/metrics  email workers :9101 (normal, low) and :9111 (critical, high), sms worker :9102, push worker :9103, webhook worker :9104, scheduler :9105, inapp worker :9106
  Sandbox inbox     http://localhost:$sandbox_port          (SMTP on :${PULSE_SANDBOX_SMTP_PORT:-1025})
  Flower            http://localhost:5555          (user:password $FLOWER_BASIC_AUTH, from $flower_credentials)
  RabbitMQ UI       http://localhost:15672         (guest/guest, when the management plugin is on)

  Dev API key (tenant "dev", scopes send,read,admin; kept in ${DEV_API_KEY_FILE:-var/dev-api-key}):
    $key

  Try it (the dev tenant has quiet hours off; elsewhere non-critical sends wait out 22:00-08:00 in the
  recipient's time zone unless they say "respect_quiet_hours": false):
    curl -s -X POST http://localhost:$PULSE_API_PORT/v1/notifications \\
      -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \\
      -d '{"channel":"email","recipient":"ada@example.com","content":{"subject":"Hello","body":"Hi Ada"}}'
    curl -s -X POST http://localhost:$PULSE_API_PORT/v1/notifications \\
      -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \\
      -d '{"channel":"sms","recipient":"+14155550100","content":{"body":"Your code is 123456"}}'

TXT
exec honcho start -f Procfile
