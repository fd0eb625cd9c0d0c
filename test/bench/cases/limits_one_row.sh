# The one-row path of the limit guard (issue 15, item 7, fold 1): the cost
# of a single-row INSERT transaction into an enforced table, against the
# same INSERT into a table without the guard, for a counted row
# (drop_newest), a summed value (scale) and a capped value (cap); one
# pgbench client, alternating, best of BENCH_ROUNDS.  Run it with
# BENCH_FSYNC=off to see the CPU alone.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"

q >/dev/null <<'SQL'
SET search_path = subscription, public;
INSERT INTO product (code, name) VALUES ('one', 'One row');
INSERT INTO plan (code, product, name) VALUES ('one_big', 'one', 'Big');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('one_big', '1 month', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('one_big', 'one_rows', 1000000000), ('one_big', 'one_seats', 1000000000), ('one_big', 'one_size', 1000);
INSERT INTO account (id, name) VALUES (500, 'one row');
SELECT subscribe(500, 'one_big', '1 month', 1, '2026-01-01');
CREATE TABLE public.one_bare (id bigserial PRIMARY KEY, account_id bigint, seats int NOT NULL DEFAULT 3);
CREATE TABLE public.one_counted (LIKE public.one_bare INCLUDING ALL);
CREATE TABLE public.one_scaled (LIKE public.one_bare INCLUDING ALL);
CREATE TABLE public.one_capped (LIKE public.one_bare INCLUDING ALL);
SELECT enforce_limit('public.one_counted', 'one_rows');
SELECT enforce_limit('public.one_scaled', 'one_seats', 'account_id', 'scale', NULL, 'seats');
SELECT enforce_limit('public.one_capped', 'one_size', 'account_id', 'cap', NULL, 'seats');
SQL

seconds=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-5}
tps() { pgbench -n -M prepared -c 1 -j 1 -T "$seconds" -f "$1" "$BENCH_DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
echo "INSERT INTO public.one_bare (account_id) VALUES (500);" >"$dir/bare.sql"
printf '%-40s %12s %12s %8s\n' case guarded_us bare_us ratio
for t in counted:drop_newest scaled:scale capped:cap; do
    echo "INSERT INTO public.one_${t%%:*} (account_id) VALUES (500);" >"$dir/guarded.sql"
    bare=0 guarded=0
    for round in $(seq "$rounds"); do
        bare=$(best "$bare" "$(tps "$dir/bare.sql")")
        guarded=$(best "$guarded" "$(tps "$dir/guarded.sql")")
    done
    awk -v l="one-row INSERT, ${t##*:} (${seconds}s x $rounds)" -v g="$guarded" -v b="$bare" \
        'BEGIN { printf "%-40s %12.1f %12.1f %8.2f\n", l, 1e6 / g, 1e6 / b, b / g }'
done

# The same in one backend, with no client round trip: batches of
# BENCH_BATCH single-row INSERT transactions (a COMMIT after each), the
# tables taking turns, the fastest batch of each (the least disturbed on a
# shared machine).
q >/dev/null <<SQL
CREATE TABLE bench.one_row_batch (tab text, us numeric);
DO \$\$
DECLARE
    started timestamptz;
    tab text;
BEGIN
    FOR round IN 1 .. ${BENCH_BATCHES:-30} LOOP
        FOREACH tab IN ARRAY '{one_bare,one_counted,one_scaled,one_capped}'::text[] LOOP
            started := clock_timestamp();
            FOR i IN 1 .. ${BENCH_BATCH:-200} LOOP
                EXECUTE format('INSERT INTO public.%I (account_id) VALUES (500)', tab);
                COMMIT;
            END LOOP;
            INSERT INTO bench.one_row_batch
            VALUES (tab, extract(epoch FROM clock_timestamp() - started) * 1e6 / ${BENCH_BATCH:-200});
            COMMIT;
        END LOOP;
    END LOOP;
END
\$\$;
SQL
q -F ' ' <<'SQL'
SELECT rpad('in-backend, ' || g.tab, 40), round(g.best, 1) AS guarded_us, round(b.best, 1) AS bare_us,
       round(g.best / b.best, 2) AS ratio
  FROM (SELECT tab, min(us) AS best FROM bench.one_row_batch GROUP BY tab) AS g,
       (SELECT min(us) AS best FROM bench.one_row_batch WHERE tab = 'one_bare') AS b
 WHERE g.tab <> 'one_bare' ORDER BY g.tab;
SELECT 'verify: ' || count(*) || ' broken' FROM subscription.verify();
SQL
