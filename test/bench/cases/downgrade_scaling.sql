-- apply_downgrade (issue 4): an account with 100k rooms in 1k domains
-- against one with 10k rooms in 100 domains, each downgraded to half its
-- domains, 40% of its rooms and half its total room capacity (C5, C6, C7).
-- Set-based trimming grows linearly: target 100k at most 12 times 10k.
SET search_path = subscription, public;
SET client_min_messages = warning;

INSERT INTO product (code, name) VALUES ('dg', 'Downgrades');
INSERT INTO plan (code, product, name, rank) VALUES
    ('dg_big', 'dg', 'Big', 2), ('dg_small_10k', 'dg', 'Small 10k', 1), ('dg_small_100k', 'dg', 'Small 100k', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('dg_big', '1 month', 100), ('dg_small_10k', '1 month', 10), ('dg_small_100k', '1 month', 10);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('dg_big', 'dg_domains', NULL), ('dg_big', 'dg_rooms', NULL), ('dg_big', 'dg_capacity', NULL),
    ('dg_small_10k', 'dg_domains', 50), ('dg_small_10k', 'dg_rooms', 4000), ('dg_small_10k', 'dg_capacity', 200000),
    ('dg_small_100k', 'dg_domains', 500), ('dg_small_100k', 'dg_rooms', 40000), ('dg_small_100k', 'dg_capacity', 2000000);

CREATE TABLE public.dg_domain (id bigserial PRIMARY KEY, account_id bigint NOT NULL);
CREATE TABLE public.dg_room (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL,
    domain_id bigint NOT NULL REFERENCES public.dg_domain ON DELETE CASCADE,
    activated_at timestamptz NOT NULL,
    capacity int NOT NULL);
CREATE INDEX ON public.dg_domain (account_id);
CREATE INDEX ON public.dg_room (account_id);
CREATE INDEX ON public.dg_room (domain_id);
SELECT enforce_limit('public.dg_domain', 'dg_domains', 'account_id', 'keep_most_referenced') ::text = '' AS domains,
       enforce_limit('public.dg_room', 'dg_rooms', 'account_id', 'drop_newest', 'activated_at') ::text = '' AS rooms,
       enforce_limit('public.dg_room', 'dg_capacity', 'account_id', 'scale', NULL, 'capacity') ::text = '' AS capacity;

-- a fresh account with "domains" domains and 100 rooms per domain on
-- average (the first quarter of the domains holds more), committed before
-- the downgrade is timed, as an account's rows would be
CREATE FUNCTION bench.populate(account bigint, domains int, small_plan text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    sub bigint;
    first_domain bigint;
BEGIN
    INSERT INTO subscription.account (id, name) VALUES (account, 'dg' || account);
    sub := subscription.subscribe(account, 'dg_big', '1 month', 1, '2026-01-01');
    INSERT INTO public.dg_domain (account_id) SELECT account FROM generate_series(1, domains);
    SELECT min(id) INTO first_domain FROM public.dg_domain WHERE account_id = account;
    INSERT INTO public.dg_room (account_id, domain_id, activated_at, capacity)
    SELECT account,
           first_domain + CASE WHEN g % 2 = 0 THEN g % domains ELSE g % (domains / 4) END,
           timestamptz '2026-01-01' + (g % 1000) * interval '1 hour',
           50 + g % 97
      FROM generate_series(1, domains * 100) AS g;
    UPDATE subscription.subscription SET pending_plan = small_plan WHERE id = sub;
END
$$;

-- the account's downgrade, timed
CREATE FUNCTION bench.downgrade_ms(account bigint, OUT ms numeric, OUT changed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := clock_timestamp();
BEGIN
    SELECT count(*) INTO changed
      FROM subscription.apply_downgrade((SELECT s.id FROM subscription.subscription AS s
                                          WHERE s.account_id = account));
    ms := round(extract(epoch FROM clock_timestamp() - t) * 1000, 1);
END
$$;

CREATE TEMP TABLE runs (rooms int, ms numeric, changed bigint);
-- alternate the sizes, so that drift hits both
DO $$
BEGIN
    FOR r IN 1 .. 3 LOOP
        PERFORM bench.populate(500 + r, 100, 'dg_small_10k'), bench.populate(600 + r, 1000, 'dg_small_100k');
    END LOOP;
END
$$;
VACUUM ANALYZE public.dg_domain, public.dg_room;
INSERT INTO runs SELECT 10000, d.ms, d.changed FROM bench.downgrade_ms(501) AS d;
INSERT INTO runs SELECT 100000, d.ms, d.changed FROM bench.downgrade_ms(601) AS d;
INSERT INTO runs SELECT 10000, d.ms, d.changed FROM bench.downgrade_ms(502) AS d;
INSERT INTO runs SELECT 100000, d.ms, d.changed FROM bench.downgrade_ms(602) AS d;
INSERT INTO runs SELECT 10000, d.ms, d.changed FROM bench.downgrade_ms(503) AS d;
INSERT INTO runs SELECT 100000, d.ms, d.changed FROM bench.downgrade_ms(603) AS d;

SELECT rooms, min(ms) AS best_ms, min(changed) AS rows_changed FROM runs GROUP BY rooms ORDER BY rooms;
SELECT 'apply_downgrade 100k rooms / 10k rooms' AS case_name,
       round((SELECT min(ms) FROM runs WHERE rooms = 100000) / (SELECT min(ms) FROM runs WHERE rooms = 10000), 2) AS ratio,
       '<= 12' AS target;
-- the trimming is exact: each account ends at its new limits
SELECT a.id AS account, usage(a.id, 'dg_domains') AS domains, usage(a.id, 'dg_rooms') AS rooms,
       usage(a.id, 'dg_capacity') AS capacity
  FROM account AS a WHERE a.id IN (501, 601) ORDER BY a.id;
