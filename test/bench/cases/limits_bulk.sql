-- Plan limits on an application table (issue 4):
--  * one INSERT ... SELECT of 100k rows into an enforced table against the
--    same table without the guard (target: at most 1.3 times its time);
--  * single-row inserts at 100k existing rows of the account against what
--    users write by hand, a PL/pgSQL trigger counting under a lock (target:
--    at least 20 times faster);
--  * O(1): a single-row insert at 1M existing rows against one at 1k rows
--    (target: at most 1.2).
SET search_path = subscription, public;
SET client_min_messages = warning;

INSERT INTO product (code, name) VALUES ('lim', 'Limits');
INSERT INTO plan (code, product, name) VALUES ('lim_big', 'lim', 'Big');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('lim_big', '1 month', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES ('lim_big', 'rooms', 100000000);
INSERT INTO account (id, name) SELECT g, 'a' || g FROM generate_series(300, 303) AS g;
SELECT count(subscribe(g, 'lim_big', '1 month', 1, '2026-01-01')) AS subscribed FROM generate_series(300, 303) AS g;

CREATE TABLE public.room_enforced (id bigserial PRIMARY KEY, account_id bigint NOT NULL, capacity int NOT NULL DEFAULT 100);
CREATE TABLE public.room_bare (id bigserial PRIMARY KEY, account_id bigint NOT NULL, capacity int NOT NULL DEFAULT 100);
CREATE TABLE public.room_by_hand (id bigserial PRIMARY KEY, account_id bigint NOT NULL, capacity int NOT NULL DEFAULT 100);
CREATE INDEX ON public.room_enforced (account_id);
CREATE INDEX ON public.room_bare (account_id);
CREATE INDEX ON public.room_by_hand (account_id);
SELECT enforce_limit('public.room_enforced', 'rooms') IS NULL AS enforced;

-- what users write by hand today: lock the account, count, compare
CREATE FUNCTION bench.count_rooms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM subscription.account WHERE id = NEW.account_id FOR UPDATE;
    IF (SELECT count(*) FROM public.room_by_hand WHERE account_id = NEW.account_id)
       >= subscription.effective_limit(NEW.account_id, 'rooms') THEN
        RAISE EXCEPTION 'room limit reached';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER count_rooms BEFORE INSERT ON public.room_by_hand FOR EACH ROW EXECUTE FUNCTION bench.count_rooms();

CREATE FUNCTION bench.bulk_rooms(OUT extension_ms numeric, OUT baseline_ms numeric)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
BEGIN
    FOR i IN 1 .. 5 LOOP
        TRUNCATE public.room_enforced, public.room_bare;
        t := clock_timestamp();
        INSERT INTO public.room_enforced (account_id) SELECT 300 FROM generate_series(1, 100000);
        extension_ms := least(extension_ms, extract(epoch FROM clock_timestamp() - t) * 1000);
        t := clock_timestamp();
        INSERT INTO public.room_bare (account_id) SELECT 300 FROM generate_series(1, 100000);
        baseline_ms := least(baseline_ms, extract(epoch FROM clock_timestamp() - t) * 1000);
    END LOOP;
    extension_ms := round(extension_ms, 1);
    baseline_ms := round(baseline_ms, 1);
END
$$;

-- n single-row INSERT statements for one account, in ms
CREATE FUNCTION bench.single_rows(tab regclass, account bigint, n int) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1 .. n LOOP
        EXECUTE format('INSERT INTO %s (account_id) VALUES ($1)', tab) USING account;
    END LOOP;
    RETURN round(extract(epoch FROM clock_timestamp() - t) * 1000, 1);
END
$$;

\pset footer off
SELECT 'INSERT ... SELECT of 100k rows' AS case_name, extension_ms, baseline_ms,
       round(extension_ms / baseline_ms, 2) AS ratio, '<= 1.3' AS target
  FROM bench.bulk_rooms();

-- 100k existing rows in account 301 of both tables, then 200 single-row inserts
INSERT INTO public.room_enforced (account_id) SELECT 301 FROM generate_series(1, 100000);
ALTER TABLE public.room_by_hand DISABLE TRIGGER count_rooms;
INSERT INTO public.room_by_hand (account_id) SELECT 301 FROM generate_series(1, 100000);
ALTER TABLE public.room_by_hand ENABLE TRIGGER count_rooms;
VACUUM ANALYZE public.room_enforced, public.room_by_hand;
SELECT 'single-row insert at 100k rows, vs PL/pgSQL count(*)' AS case_name,
       e AS extension_ms, b AS by_hand_ms, round(b / e, 1) AS times_faster, '>= 20' AS target
  FROM (SELECT bench.single_rows('public.room_enforced', 301, 200) AS e,
               bench.single_rows('public.room_by_hand', 301, 200) AS b) AS x;

-- O(1): 1M existing rows (account 302) against 1k (account 303), 2000 inserts each, best of 3
INSERT INTO public.room_enforced (account_id) SELECT 302 FROM generate_series(1, 1000000);
INSERT INTO public.room_enforced (account_id) SELECT 303 FROM generate_series(1, 1000);
VACUUM ANALYZE public.room_enforced;
SELECT 'single-row insert at 1M rows over 1k rows' AS case_name, big AS at_1m_ms, small AS at_1k_ms,
       round(big / small, 2) AS ratio, '<= 1.2' AS target
  FROM (SELECT least(bench.single_rows('public.room_enforced', 302, 2000), bench.single_rows('public.room_enforced', 302, 2000),
                     bench.single_rows('public.room_enforced', 302, 2000)) AS big,
               least(bench.single_rows('public.room_enforced', 303, 2000), bench.single_rows('public.room_enforced', 303, 2000),
                     bench.single_rows('public.room_enforced', 303, 2000)) AS small) AS x;
SELECT account_id, used, (SELECT count(*) FROM public.room_enforced AS r WHERE r.account_id = u.account_id) AS rows
  FROM usage_counter AS u WHERE feature = 'rooms' ORDER BY 1;
