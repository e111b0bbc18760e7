#!/usr/bin/env bash
# Sets the kibana_system user's password to KIBANA_PASSWORD so Kibana can log in to Elasticsearch with security on.
# Run by docker-compose.yml's kibana-setup service in the Elasticsearch image, which has bash and curl (no jq, no
# python): the password is escaped here into a JSON string, and sent on stdin so that it is not in curl's arguments.
set -euo pipefail

url="${ELASTICSEARCH_URL:-http://elasticsearch:9200}/_security/user/kibana_system/_password"
attempts="${KIBANA_SETUP_ATTEMPTS:-60}"

json_string() {  # $1 as a JSON string literal
  local value=$1
  if [[ $value == *[[:cntrl:]]* ]]; then
    echo "kibana-setup: KIBANA_PASSWORD holds a control character; use printable characters" >&2
    return 1
  fi
  value=${value//\\/\\\\}
  value=${value//\"/\\\"}
  printf '"%s"' "$value"
}

body="{\"password\":$(json_string "$KIBANA_PASSWORD")}"
for ((attempt = 1; attempt <= attempts; attempt++)); do
  answer=$(curl -sS -X POST -u "elastic:$ELASTIC_PASSWORD" -H "Content-Type: application/json" \
    --data-binary @- "$url" <<<"$body" 2>&1) || true
  if [[ $answer == "{}" ]]; then
    echo "kibana-setup: kibana_system password set"
    exit 0
  fi
  echo "kibana-setup: attempt $attempt/$attempts: ${answer:0:300}" >&2
  sleep 5
done
echo "kibana-setup: gave up; a 401 above means ELASTIC_PASSWORD is not the elastic user's password (see README)" >&2
exit 1
