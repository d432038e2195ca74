#!/bin/bash
# Applies the vuegraf InfluxDB template (dashboard, variables, checks) once, at first start.
#
# The influxdb:2.x image runs executable *.sh files in /docker-entrypoint-initdb.d/ only when
# it sets up a new, empty data volume (DOCKER_INFLUXDB_INIT_MODE=setup), after creating the
# user, org, bucket and admin token, with the influx CLI already configured for that
# temporary server. So this runs exactly once per data volume and needs no token of its own.
#
# The two checks of the template read the bucket "vuegraf" (a check cannot use a dashboard
# variable); when DOCKER_INFLUXDB_INIT_BUCKET names another bucket, they are pointed at it.
#
# A failure here must not take the database down with it (the image's entrypoint would throw
# the new volume away and start over), so it is reported and the setup goes on; the message
# says how to apply the template by hand.

template="${VUEGRAF_TEMPLATE:-/templates/influx_dashboard.json}"
bucket="${DOCKER_INFLUXDB_INIT_BUCKET:-vuegraf}"
org="${DOCKER_INFLUXDB_INIT_ORG:-}"

log() { echo "vuegraf-template: $*" >&2; }

if [ ! -r "$template" ]; then
    log "no template at $template; skipping the vuegraf dashboard"
    exit 0
fi

work="$(mktemp)"
trap 'rm -f "$work"' EXIT

if [ "$bucket" = vuegraf ]; then
    cp "$template" "$work"
elif [[ "$bucket" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
    # In the JSON text the Flux literal from(bucket: "vuegraf") reads from(bucket: \"vuegraf\").
    sed "s/from(bucket: \\\\\"vuegraf\\\\\")/from(bucket: \\\\\"${bucket}\\\\\")/g" \
        "$template" >"$work"
else
    log "bucket name '$bucket' has unusual characters; the checks keep reading bucket 'vuegraf'" \
        "(edit their queries in the UI: Alerts > Checks)"
    cp "$template" "$work"
fi

args=(apply --file "$work" --force yes)
if [ -n "$org" ]; then
    args+=(--org "$org")
fi

if influx "${args[@]}" >/dev/null; then
    log "applied the vuegraf dashboard, variables and checks (bucket '$bucket')"
else
    log "could not apply $template; apply it later with:" \
        "docker compose exec influxdb influx apply --file /templates/influx_dashboard.json --force yes"
fi
exit 0
