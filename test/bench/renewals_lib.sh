# What the renewal cases share (test/bench/cases/renew_*.sh).

# populate DB N [PER_ACCOUNT]: a database of its own with N due monthly
# subscriptions (1 to 5 licenses), each with an add-on batch, PER_ACCOUNT
# (default 1) to an account, a coupon (10% off) on one in ten
populate() {
    local db=$1 n=$2 per=${3:-1}
    psql -X -qAt -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
CREATE EXTENSION subscription;
SET search_path = subscription;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO addon (code, product, name) VALUES ('zd_collab', 'desk', 'Collaboration');
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_collab', '1 month', 10);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_pro', 'zd_collab');
INSERT INTO coupon (code, percent_off, currency) VALUES ('TEN', 10, 'EUR');
INSERT INTO account (id, name) SELECT g, 'a' || g FROM generate_series(1, $n / $per) AS g;
SELECT count(subscribe(1 + (g - 1) / $per, 'zd_pro', '1 month', 1 + g % 5, '2026-01-01', 'always', CASE WHEN g % 10 = 0 THEN 'TEN' END))
  FROM generate_series(1, $n) AS g;
SELECT count(purchase_addon(id, 'zd_collab', 1, '2026-01-10')) FROM subscription;
VACUUM ANALYZE;
SQL
}
