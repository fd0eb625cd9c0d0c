# PGXS build of the subscription extension.
#   make && make install            build and install into the pg_config on PATH
#   make installcheck               pg_regress and isolation suites against a running server
#   bash test/check.sh              every suite on a throwaway cluster (see README)

EXTENSION   = subscription
MODULE_big  = subscription
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" subscription.control)
# sql/subscription--1.0.sql is released and never changes; every later
# change ships as an upgrade step (sql/subscription--1.0--1.1.sql, ...).
# The fresh script of the current version is built: its source is the
# current state of every object, in files per concern under sql/src,
# concatenated in the order below (the schema before the functions, the
# one config dump list after the tables, PUBLIC's rights last).  A change
# goes into both its step and its source file; test/upgrade.sh proves
# that an upgrade and a fresh install give the same objects.
SQL_SOURCES = $(addprefix sql/src/, \
              00_values.sql 01_clock.sql 10_catalog.sql 11_tenants.sql 12_seats.sql 13_ledger.sql 13_invoices.sql \
              14_history.sql 15_limits.sql 15_usage.sql 16_roles.sql 17_tenant_keys.sql 18_events.sql 18_idempotency.sql 19_config_dump.sql \
              20_pricing.sql 21_periods.sql 22_checks.sql 23_actors.sql 24_keep.sql 25_keyed.sql 26_idempotency.sql \
              30_subscribe.sql 31_seats.sql 40_limits.sql 41_downgrade.sql 42_entitlements.sql \
              50_lifecycle.sql 51_plan_changes.sql 52_money.sql 53_addons.sql \
              54_previews.sql 55_closing.sql 56_migrations.sql 57_invoices.sql 58_usage.sql 60_renewals.sql 61_dunning.sql 62_events.sql 65_verify.sql 66_distribute.sql 70_rights.sql 99_public.sql)
# a file under sql/src left out of the list would be left out of the script
ifneq ($(filter-out $(SQL_SOURCES),$(wildcard sql/src/*.sql)),)
$(error sql/src files missing from SQL_SOURCES: $(filter-out $(SQL_SOURCES),$(wildcard sql/src/*.sql)))
endif
DATA_built  = sql/subscription--$(EXTVERSION).sql
DATA        = sql/subscription--1.0.sql $(wildcard sql/subscription--*--*.sql)
PGFILEDESC  = "subscription - subscription billing inside PostgreSQL"

# Our code builds with -Wextra -Werror; the server headers are included as
# system headers so that their own -Wextra warnings do not count against us.
PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
              -isystem $(includedir_server)

REGRESS      = $(sort $(notdir $(basename $(wildcard test/sql/*.sql))))
REGRESS_OPTS = --inputdir=test --load-extension=subscription
# PG 15's pg_isolation_regress has no --expecteddir: with --outputdir=. it
# finds the golden files in ./expected like pg_regress does.
ISOLATION      = $(sort $(notdir $(basename $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --outputdir=. --load-extension=subscription

EXTRA_CLEAN = results regression.diffs regression.out output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# after PGXS, whose "all" must stay the first target
sql/subscription--$(EXTVERSION).sql: $(SQL_SOURCES)
	{ printf '%s\n' '/* subscription--$(EXTVERSION).sql: subscription billing inside PostgreSQL, built from sql/src (see the Makefile) */' \
	    '' '\echo Use "CREATE EXTENSION subscription" to load this file. \quit'; \
	  for f in $^; do printf '\n-- %s\n' $$f; cat $$f; done; } > $@
