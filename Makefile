# PGXS build of the subscription extension.
#   make && make install            build and install into the pg_config on PATH
#   make installcheck               pg_regress and isolation suites against a running server
#   bash test/check.sh              every suite on a throwaway cluster (see README)

EXTENSION   = subscription
MODULE_big  = subscription
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" subscription.control)
# sql/subscription--1.0.sql is released and never changes; every later
# change ships as an upgrade step, and the fresh script of the current
# version is built from the released one and the steps (test/upgrade.sh
# proves that an upgrade and a fresh install give the same objects)
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

sql/subscription--$(EXTVERSION).sql: sql/subscription--1.0.sql $(sort $(wildcard sql/subscription--*--*.sql))
	{ printf '%s\n' '/* subscription--$(EXTVERSION).sql: built from $(notdir $^) */' \
	    '\echo Use "CREATE EXTENSION subscription" to load this file. \quit'; \
	  for f in $^; do grep -v '^\\echo ' $$f; done; } > $@

EXTRA_CLEAN = results regression.diffs regression.out output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
