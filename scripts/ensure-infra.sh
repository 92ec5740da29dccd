#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer. On Debian as root, install and start what is missing;
# elsewhere, say exactly what to do.
set -euo pipefail

PG_HOST=${PULSE_TEST_PG_HOST:-127.0.0.1}
AMQP_HOST=${PULSE_TEST_AMQP_HOST:-127.0.0.1}

listening() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for() { # name host port
  for _ in $(seq 1 60); do listening "$2" "$3" && return 0; sleep 1; done
  echo "$1 did not come up on $2:$3" >&2; return 1
}

can_manage_locally() { [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; }

explain_and_exit() {
  cat >&2 <<TXT
$1 is not reachable. Start it, then run this again:
  - with Docker:   docker compose up -d postgres rabbitmq
  - on Debian:     sudo apt-get install -y postgresql rabbitmq-server
                   sudo pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start
                   sudo rabbitmq-server -detached
  - elsewhere: PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and RabbitMQ on 127.0.0.1:5672
    (guest/guest), or point PULSE_DATABASE_URL / PULSE_BROKER_URL at yours.
TXT
  exit 1
}

if ! listening "$PG_HOST" 5432; then
  can_manage_locally || explain_and_exit PostgreSQL
  command -v pg_ctlcluster >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL "$PG_HOST" 5432
fi

if ! listening "$AMQP_HOST" 5672; then
  can_manage_locally || explain_and_exit RabbitMQ
  command -v rabbitmq-server >/dev/null || { apt-get update -qq && apt-get install -y -qq rabbitmq-server >/dev/null; }
  rabbitmq-server -detached
  wait_for RabbitMQ "$AMQP_HOST" 5672
fi

# The management UI (15672) is a nicety: enable it when we may, never fail for it.
if can_manage_locally && command -v rabbitmq-plugins >/dev/null && ! listening "$AMQP_HOST" 15672; then
  rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null 2>&1 || true
fi
echo "PostgreSQL and RabbitMQ are up."
