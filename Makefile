# PGXS build of the subscription extension.
#   make && make install            build and install into the pg_config on PATH
#   make installcheck               pg_regress and isolation suites against a running server
#   bash test/check.sh              every suite on a throwaway cluster (see README)

EXTENSION   = subscription
MODULE_big  = subscription
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))
DATA        = $(wildcard sql/subscription--*.sql)
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
