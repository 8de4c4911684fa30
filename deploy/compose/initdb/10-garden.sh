#!/bin/sh
# First start of the compose PostgreSQL (docker-entrypoint-initdb.d): the bot's store `gardenbot`
# and the sample operated system `garden_dx` (the bot's shipped sample schema and rows), each with
# its own login. The passwords come from the compose environment.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v bot_password="$GARDENBOT_DB_PASSWORD" -v garden_password="$GARDEN_DB_PASSWORD" <<'SQL'
CREATE ROLE gardenbot LOGIN PASSWORD :'bot_password';
CREATE DATABASE gardenbot OWNER gardenbot;
CREATE ROLE garden LOGIN PASSWORD :'garden_password';
CREATE DATABASE garden_dx OWNER garden;
-- backup and restore: the bot's target login creates the scratch and replacement databases.
ALTER ROLE garden CREATEDB;
SQL

psql -v ON_ERROR_STOP=1 --username garden --dbname garden_dx -1 -f /garden_dx_sample.sql
