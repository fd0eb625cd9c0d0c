-- S6: statements naming a partition or an inheritance child skipped the
-- parent's statement triggers; negative values under scale paid for large
-- ones; the table owner could DISABLE TRIGGER USER, and the drift then made
-- apply_downgrade fail on the counter's CHECK.
-- 1.1: trees and temporary tables are refused; DDL that breaks a guard is
-- refused by event triggers; scale refuses negative values; a drifted
-- counter is recounted before trimming (test/sql/tenant_code.sql).
BEGIN;
SELECT plan(11);
SELECT security_test.fixture();

SET ROLE tenant_a;
CREATE TABLE public.s6_part (id int, account_id bigint NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE public.s6_part_1 PARTITION OF public.s6_part FOR VALUES FROM (0) TO (1000);
CREATE TABLE public.s6_parent (id int PRIMARY KEY, account_id bigint NOT NULL);
CREATE TABLE public.s6_child () INHERITS (public.s6_parent);
CREATE TABLE public.s6_plain (id int PRIMARY KEY, account_id bigint NOT NULL, volume int);
CREATE TABLE public.s6_other (id int PRIMARY KEY, account_id bigint NOT NULL);
RESET ROLE;

SELECT is(security_test.sqlstate_of($$SELECT subscription.enforce_limit('public.s6_part', 'widgets')$$),
          '0A000', 'S6: a partitioned table is refused');
SELECT is(security_test.sqlstate_of($$SELECT subscription.enforce_limit('public.s6_part_1', 'widgets')$$),
          '0A000', 'S6: a partition is refused');
SELECT is(security_test.sqlstate_of($$SELECT subscription.enforce_limit('public.s6_child', 'widgets')$$),
          '0A000', 'S6: an inheritance child is refused');
SELECT subscription.enforce_limit('public.s6_plain', 'volume', 'account_id', 'scale', NULL, 'volume');
SELECT subscription.enforce_limit('public.s6_other', 'gadgets');

SET ROLE tenant_a;
SELECT is(security_test.sqlstate_of('CREATE TABLE public.s6_sneak () INHERITS (public.s6_plain)'),
          '55006', 'S6: a limited table gets no inheritance child');
SELECT is(security_test.sqlstate_of('ALTER TABLE public.s6_plain INHERIT public.s6_other'),
          '55006', 'S6: nor becomes one');
SELECT is(security_test.sqlstate_of('ALTER TABLE public.s6_plain DISABLE TRIGGER USER'),
          '55006', 'S6: its guards cannot be disabled');
SELECT is(security_test.sqlstate_of($$ALTER TABLE public.s6_plain ENABLE REPLICA TRIGGER
                                      subscription_limit_volume_$$ || left(md5('volume'), 8) || '_i'),
          '55006', 'S6: nor set to fire only on replicas');
SELECT is(security_test.sqlstate_of('DROP TRIGGER subscription_limit_volume_' || left(md5('volume'), 8) || '_i ON public.s6_plain'),
          '55006', 'S6: nor dropped');
-- scale: a negative value does not pay for a large one
SELECT is(security_test.sqlstate_of('INSERT INTO public.s6_plain VALUES (1, 1, 900), (2, 1, -800), (3, 1, 800)'),
          '23514', 'S6: a negative value is refused under scale');
SELECT is(security_test.sqlstate_of('INSERT INTO public.s6_plain VALUES (4, 1, -5)'),
          '23514', 'S6: one negative row too');
RESET ROLE;
SELECT is(subscription.usage(1, 'volume'), 0::bigint, 'S6: and nothing was counted');

SELECT * FROM finish();
ROLLBACK;
