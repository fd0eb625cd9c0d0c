-- S14 (issue 17, h-cit26b): on Citus, apply_downgrade tells the workers'
-- guards of its trim by subscription.trimming ("subscription tenant account
-- relation", SET LOCAL), and a guard on a shard archives what a cascade
-- deletes there under that trim.  Any session can set the setting: on the
-- unmerged branch it was honoured on a single server too, and the guard
-- did not check whose rows it archived, so the owner of a limited table
-- (or anyone deleting from one) filed its own deleted rows in another
-- tenant's archive, or faked a trim's archive of its own.  1.1: a single
-- server ignores the setting entirely (its trims run in the trimming
-- backend); on a shard the rows must be of the account it names and the
-- subscription named that account's (42501 otherwise; citus.sh checks it
-- on the workers).
BEGIN;
SELECT plan(7);
SELECT security_test.fixture();

SET ROLE tenant_a;
CREATE TABLE public.s14_domain (id int PRIMARY KEY, account_id bigint NOT NULL);
CREATE TABLE public.s14_room (id int PRIMARY KEY, account_id bigint NOT NULL,
                              domain_id int REFERENCES public.s14_domain ON DELETE CASCADE);
RESET ROLE;
SELECT subscription.enforce_limit('public.s14_domain', 'widgets');
SELECT subscription.enforce_limit('public.s14_room', 'gadgets');
INSERT INTO public.s14_domain SELECT i, 1 FROM generate_series(1, 3) AS i;
INSERT INTO public.s14_room SELECT 10 * d + r, 1, d FROM generate_series(1, 3) AS d, generate_series(1, 2) AS r;
SELECT coalesce(max(id), 0) AS last_trimmed FROM subscription.trimmed \gset
SELECT security_test.sub_of(1) AS sub_a, security_test.sub_of(2) AS sub_b \gset

-- the table's owner names account 2's trim, then deletes its own rows
SET ROLE tenant_a;
SELECT set_config('subscription.trimming',
                  format('%s 2 2 public.s14_domain', :sub_b), true) IS NOT NULL AS forged;
SELECT lives_ok($$DELETE FROM public.s14_domain WHERE id = 1$$,
                'S14: a delete under a forged subscription.trimming runs as any delete on a single server');
RESET ROLE;
SELECT is((SELECT count(*) FROM subscription.trimmed WHERE id > :last_trimmed AND account_id = 2), 0::bigint,
          'S14: nothing is filed in another account''s archive');

-- the same naming its own account's subscription: no trim's archive faked
SET ROLE tenant_a;
SELECT set_config('subscription.trimming',
                  format('%s 1 1 public.s14_domain', :sub_a), true) IS NOT NULL AS forged;
SELECT lives_ok($$DELETE FROM public.s14_domain WHERE id = 2$$,
                'S14: a delete naming its own account''s trim runs as any delete');
-- a malformed value is ignored too (a shard refuses it: 22023)
SELECT set_config('subscription.trimming', 'public.s14_domain', true) IS NOT NULL AS malformed;
SELECT lives_ok($$DELETE FROM public.s14_room WHERE id = 31$$,
                'S14: a malformed subscription.trimming is ignored on a single server');
RESET ROLE;
SELECT is((SELECT count(*) FROM subscription.trimmed WHERE id > :last_trimmed), 0::bigint,
          'S14: nothing is archived by a setting set by hand: a single server ignores it');
SELECT is(subscription.usage(1, 'gadgets'), (SELECT count(*) FROM public.s14_room WHERE account_id = 1),
          'S14: the counters follow the deletes and their cascades');
SELECT is(subscription.usage(1, 'widgets'), (SELECT count(*) FROM public.s14_domain WHERE account_id = 1),
          'S14: so do the domains''');

SELECT * FROM finish();
ROLLBACK;
