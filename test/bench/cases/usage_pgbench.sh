# Issue 21, item 7: the limit guard with a meter (time_weighted) on stays
# within 10% of its ratio without one, each against the same table without
# the guard, all in one run:
#   * single-row inserts, 4 pgbench clients on 4 accounts (the rounds
#     alternate the three tables, best of BENCH_ROUNDS each): metered / bare
#     at least 0.7, and (metered / bare) / (unmetered / bare) at least 0.9;
#   * bulk: one INSERT ... SELECT of 100k rows (best of 5, alternating):
#     metered / bare at most 1.3, and metered / unmetered at most 1.1;
# and record_usage() with a fresh key per call, 4 clients, in calls per
# second (at least 5,000 on a durable cluster).  The counters' periods
# close at 2026-02-01 (U3): the runs cross it once, then count in the next.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"

q >/dev/null <<'SQL'
SET search_path = subscription, public;
INSERT INTO product (code, name) VALUES ('usepg', 'Usage pgbench');
INSERT INTO plan (code, product, name) VALUES ('usepg_big', 'usepg', 'Big');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('usepg_big', '1 month', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES ('usepg_big', 'metered_devices', NULL), ('usepg_big', 'plain_devices', NULL),
                                                     ('usepg_big', 'api_calls', NULL);
SELECT plan_usage_price('usepg_big', 'metered_devices', 0, 0.01);
SELECT plan_usage_price('usepg_big', 'api_calls', 0, 0.001);
INSERT INTO account (id, name) SELECT 500 + c, 'client ' || c FROM generate_series(0, 3) AS c;
SELECT subscribe(500 + c, 'usepg_big', '1 month', 1, '2026-01-01') FROM generate_series(0, 3) AS c;
CREATE TABLE public.mdevice_enforced (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
CREATE TABLE public.mdevice_plain (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
CREATE TABLE public.mdevice_bare (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
SELECT enforce_limit('public.mdevice_enforced', 'metered_devices');
SELECT meter('public.mdevice_enforced', 'metered_devices', 'time_weighted');
SELECT enforce_limit('public.mdevice_plain', 'plain_devices');
SQL

seconds=${BENCH_SECONDS:-10}
rounds=${BENCH_ROUNDS:-3}
for t in enforced plain bare; do
    echo "INSERT INTO public.mdevice_$t (account_id, name) VALUES (500 + :client_id, 'd');" > "$dir/$t.sql"
done
tps() { pgbench -n -c 4 -j 4 -T "$seconds" -f "$1" "$BENCH_DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
metered=0; plain=0; bare=0
for round in $(seq "$rounds"); do
    bare=$(best "$bare" "$(tps "$dir/bare.sql")")
    plain=$(best "$plain" "$(tps "$dir/plain.sql")")
    metered=$(best "$metered" "$(tps "$dir/enforced.sql")")
done
printf '%-52s %10s %10s %10s %8s %8s\n' case metered_tps guard_tps bare_tps m/bare g/bare
printf '%-52s %10.0f %10.0f %10.0f %8.2f %8.2f  (target m/bare >= 0.7)\n' \
    "single-row insert, 4 clients (${seconds}s, best of $rounds)" "$metered" "$plain" "$bare" \
    "$(awk -v e="$metered" -v b="$bare" 'BEGIN { print e / b }')" "$(awk -v e="$plain" -v b="$bare" 'BEGIN { print e / b }')"
printf '%-52s %8.2f  (target >= 0.9: within 10%%)\n' "  metered ratio / unmetered ratio" \
    "$(awk -v m="$metered" -v p="$plain" 'BEGIN { print m / p }')"

q <<'SQL'
CREATE FUNCTION bench.bulk_devices(OUT metered_ms numeric, OUT plain_ms numeric, OUT bare_ms numeric)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
BEGIN
    -- the three in a rotating order, so that none always runs first
    FOR i IN 1 .. 6 LOOP
        DELETE FROM public.mdevice_enforced WHERE account_id = 503;
        DELETE FROM public.mdevice_plain WHERE account_id = 503;
        DELETE FROM public.mdevice_bare WHERE account_id = 503;
        FOR k IN 0 .. 2 LOOP
            t := clock_timestamp();
            CASE (i + k) % 3
                WHEN 0 THEN
                    INSERT INTO public.mdevice_enforced (account_id, name) SELECT 503, 'd' FROM generate_series(1, 100000);
                    metered_ms := CASE WHEN i > 1 THEN least(metered_ms, extract(epoch FROM clock_timestamp() - t) * 1000) END;
                WHEN 1 THEN
                    INSERT INTO public.mdevice_plain (account_id, name) SELECT 503, 'd' FROM generate_series(1, 100000);
                    plain_ms := CASE WHEN i > 1 THEN least(plain_ms, extract(epoch FROM clock_timestamp() - t) * 1000) END;
                ELSE
                    INSERT INTO public.mdevice_bare (account_id, name) SELECT 503, 'd' FROM generate_series(1, 100000);
                    bare_ms := CASE WHEN i > 1 THEN least(bare_ms, extract(epoch FROM clock_timestamp() - t) * 1000) END;
            END CASE;
        END LOOP;
    END LOOP;
    metered_ms := round(metered_ms, 1);
    plain_ms := round(plain_ms, 1);
    bare_ms := round(bare_ms, 1);
END
$$;
SQL
q -F ' ' -c "SELECT * FROM bench.bulk_devices()" | {
    read -r m p b
    printf '%-52s %10s %10s %10s %8s %8s\n' case metered_ms guard_ms bare_ms m/bare g/bare
    printf '%-52s %10s %10s %10s %8.2f %8.2f  (target m/bare <= 1.3)\n' "bulk INSERT ... SELECT 100k (best of 5)" "$m" "$p" "$b" \
        "$(awk -v e="$m" -v x="$b" 'BEGIN { print e / x }')" "$(awk -v e="$p" -v x="$b" 'BEGIN { print e / x }')"
    printf '%-52s %8.2f  (target <= 1.1: within 10%%)\n' "  metered / unmetered" "$(awk -v e="$m" -v x="$p" 'BEGIN { print e / x }')"
}
q -c "SELECT 'metered counters equal the rows: ' || bool_and(u.used = (SELECT count(*) FROM public.mdevice_enforced d WHERE d.account_id = u.account_id)) FROM subscription.usage_counter u WHERE u.feature = 'metered_devices'"

printf '%s\n' '\set k random(1, 1000000000000)' \
    "SELECT subscription.record_usage(500 + :client_id, 'api_calls', 1, 'call-' || :k);" > "$dir/record.sql"
# the baseline: a bare insert of the same row (usage_record's columns and
# primary key) in a table without the extension, one durable commit each
q -c "CREATE TABLE public.record_bare (LIKE subscription.usage_record INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                                       PRIMARY KEY (tenant_id, account_id, feature, key))"
printf '%s\n' '\set k random(1, 1000000000000)' \
    "INSERT INTO public.record_bare VALUES (500 + :client_id, 500 + :client_id, 'api_calls', 'call-' || :k, 1, 1, now());" \
    > "$dir/record_bare.sql"
# record_usage writes no event (nothing NOTIFYs); subscription.notify_events
# on and off, each against the bare insert of the same run, alternating
events_before=$(q -c "SELECT count(*) FROM subscription.event")
printf '%-52s %12s %12s %8s\n' case record_tps bare_tps ratio
for notify in on off; do
    calls=0; bare_rec=0
    for round in $(seq "$rounds"); do
        calls=$(best "$calls" "$(PGOPTIONS="${PGOPTIONS:-} -c subscription.notify_events=$notify" tps "$dir/record.sql")")
        bare_rec=$(best "$bare_rec" "$(PGOPTIONS="${PGOPTIONS:-} -c subscription.notify_events=$notify" tps "$dir/record_bare.sql")")
    done
    printf '%-52s %12.0f %12.0f %8.2f  (target >= 5000 calls/s durable)\n' \
        "record_usage, 4 clients, fresh keys, notify_events $notify" "$calls" "$bare_rec" \
        "$(awk -v e="$calls" -v b="$bare_rec" 'BEGIN { print e / b }')"
done
q -c "SELECT 'recorded equals counted: ' || bool_and(u.used = (SELECT count(*) FROM subscription.usage_record r WHERE r.account_id = u.account_id AND r.feature = 'api_calls')) FROM subscription.usage_counter u WHERE u.feature = 'api_calls'"
q -c "SELECT 'events written by the record_usage runs: ' || (count(*) - $events_before) FROM subscription.event"
# record_usage's own cost: the same calls with commits that do not wait for
# the disk (synchronous_commit off), with the functions' times tracked:
# where a call's time goes, per function (self time per call, in
# microseconds)
q -c "SELECT pg_stat_reset()" >/dev/null
nowait=$(PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=off -c track_functions=all" \
         pgbench -n -c 4 -j 4 -T "$seconds" -f "$dir/record.sql" "$BENCH_DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
bare_nowait=$(PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=off" tps "$dir/record_bare.sql")
printf '%-52s %12.0f calls/s, bare %0.f tps (CPU: no wait for the disk)\n' "record_usage, 4 clients, synchronous_commit off" \
    "$nowait" "$bare_nowait"
sleep 1
q -F ' ' -c "SELECT f.funcname, f.calls, round((f.self_time * 1000 / f.calls)::numeric, 1)
               FROM pg_stat_user_functions AS f WHERE f.calls > 0
              ORDER BY f.self_time DESC LIMIT 10" | while read -r fn calls us; do
    printf '  %-50s %10s calls %10s us self per call\n' "$fn" "$calls" "$us"
done
