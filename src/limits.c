/*-------------------------------------------------------------------------
 *
 * limits.c
 *	  The limit guard: plan limits enforced on the application's own tables
 *	  (C4-C11, L12, Z13, K1).
 *
 * subscription.enforce_limit() attaches limit_guard() to a table as
 * AFTER ... FOR EACH STATEMENT triggers over the transition tables, with
 * the feature as argument.  Per statement, the guard sums the change per
 * account -- rows (drop_newest, keep_most_referenced, block), the value
 * column (scale), non-NULL values (detach) -- and moves each account's
 * counter in subscription.usage_counter by one conditional UPDATE, in
 * account order, read with the latest snapshot: used + delta may not pass
 * the account's limit.  As with seats, concurrent writers of an account
 * queue on its counter row and none can take a unit that is gone; the cost
 * is per statement and account, never per existing row.  The limit itself
 * is stored in the counter row and kept by triggers on what it depends on
 * (subscription.refresh_limits), so the check reads one row.  cap checks
 * each written value against the limit its counter row carries, and
 * counts nothing.
 *
 * What a row counts is said once (LimitCounting, below): the recount of a
 * whole table (enforce_limit, apply_downgrade, verify), the statement's
 * delta over its transition tables and the one-row path all derive from it.
 *
 * The table's registration and the guard's plans are cached per relation
 * and feature for the life of the backend.  An invalidation of the
 * relation's relcache entry (ALTER TABLE, DROP TABLE, and enforce_limit and
 * unenforce_limit, which invalidate it themselves) marks the entry, which
 * is rebuilt on next use.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(limit_guard);
PG_FUNCTION_INFO_V1(recount_usage);
PG_FUNCTION_INFO_V1(invalidate_limit_cache);
PG_FUNCTION_INFO_V1(limit_registrations_invalidate);
PG_FUNCTION_INFO_V1(usage_drift);
PG_FUNCTION_INFO_V1(shard_usage);
PG_FUNCTION_INFO_V1(move_usage);
PG_FUNCTION_INFO_V1(limit_catalog_invalidates);

/*
 * The meters' accumulators (issue 21), moved by the same UPDATE that moves
 * used, from the row as it was: the peak of the use, and the integral of
 * the use over time (row-seconds) up to t, the later of the last change and
 * the statement's start (NOW), so that it never runs backwards when writers
 * queue on the counter.  O(1): no other row, no other statement.  Only
 * where they are read: a registered table's feature with a meter, and
 * usage without rows; the guard of a feature without one leaves them out
 * of its UPDATE (MoveUsage), and subscription.meter() starts them when it
 * creates a meter.  On Citus the counter is read before it is moved
 * (MoveCitusUsage), and whether the feature has a meter is read with it.
 *
 * U3: a write at or after the end of the counter's billing period (closes,
 * set by subscription.open_usage) before the renewal billed it is kept out
 * of the UPDATE (METER_IN_PERIOD): the guard first calls
 * subscription.close_usage (CloseUsage), which keeps the figures of each
 * period ended since and starts the counter in the period that holds the
 * write, and moves it then.  The writes that stay in the period, all but
 * one per period end, pay only that condition on the row.
 */
#define METER_IN_PERIOD(U, NOW) "(" U "closes IS NULL OR " U "closes > " NOW ")"
#define METER_ACCUMULATORS(U, NOW) \
	"peak = greatest(" U "peak, " U "used + $3)," \
	" integral = " U "integral + " U "used * extract(epoch FROM greatest(" U "since, " NOW ") - " U "since)," \
	" since = greatest(" U "since, " NOW ")"

/* INSERT, UPDATE, DELETE: the GuardedEvent values that carry rows */
#define LIMIT_NUM_EVENTS 3

/*
 * What a row of a registered table counts for its feature, read from its
 * registration in subscription.limited_table (ReadLimitCounting).  The
 * set-based count (CountedRowsSql: enforce_limit's and apply_downgrade's
 * recount, verify, the statement guard's delta) and the one-row path
 * (CountRow) are both derived from it, and nothing else says it.
 */
typedef struct LimitCounting
{
	DowngradePolicy policy;		/* cap: check values, count nothing;
								 * detach: non-NULL values count one;
								 * scale: the values are summed;
								 * the others: each row counts one */
	char	   *account_column; /* quoted; NULL once the SQL is built */
	char	   *value_column;	/* quoted; NULL without a value column */
	AttrNumber	account_attnum;
	Oid			account_type;
	AttrNumber	value_attnum;	/* 0 without a value column */
	Oid			value_type;
} LimitCounting;

/* a feature's name may be of any length: the key holds its hash */
typedef struct LimitKey
{
	Oid			relid;
	uint64		feature_hash;
} LimitKey;

typedef struct LimitEntry
{
	LimitKey	key;
	char	   *feature;		/* the name hashed, in TopMemoryContext */
	bool		valid;
	bool		registered;		/* false: the extension's idle own guard */
	bool		metered;		/* the feature has a meter: the counter's
								 * UPDATE keeps its accumulators */
	LimitCounting counting;		/* what a row counts (no column names) */
	char	   *archive_sql;	/* NULL unless this guard archives cascades */
	SPIPlanPtr	archive;		/* reads old_rows, as the table's owner */
	char	   *delta_sql[LIMIT_NUM_EVENTS];	/* per account: the change */
	SPIPlanPtr	deltas[LIMIT_NUM_EVENTS];	/* prepared on first use: each
											 * reads its own transition tables */
} LimitEntry;

static HTAB *limit_cache = NULL;
/* each in two forms: [0] for the SQL of version 1.0, [1] versioned limits */
static SPIPlanPtr move_usage_plan[2];
/* [0] a registered table's unmetered write, [1] usage without rows (move_usage) */
static SPIPlanPtr move_usage_plan_11[2];
static SPIPlanPtr ensure_counter_plan[2];
static SPIPlanPtr read_usage_plan[2];
static SPIPlanPtr reset_usage_plan = NULL;
static SPIPlanPtr way_out_plan = NULL;

/*
 * A relcache invalidation only marks entries: it may arrive while an entry
 * is in use (a plan being prepared reads the catalogs), so the plans and
 * texts are freed and rebuilt on next use, as ri_triggers.c does.
 */
static void
LimitCacheCallback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	LimitEntry *entry;

	hash_seq_init(&status, limit_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || entry->key.relid == relid)
			entry->valid = false;
}

/* what an entry built, freed before it is built again (never in the callback) */
static void
ForgetLimitEntry(LimitEntry *entry)
{
	int			e;

	for (e = 0; e < LIMIT_NUM_EVENTS; e++)
	{
		if (entry->deltas[e] != NULL)
			SPI_freeplan(entry->deltas[e]);
		if (entry->delta_sql[e] != NULL)
			pfree(entry->delta_sql[e]);
		entry->deltas[e] = NULL;
		entry->delta_sql[e] = NULL;
	}
	if (entry->archive != NULL)
		SPI_freeplan(entry->archive);
	if (entry->archive_sql != NULL)
		pfree(entry->archive_sql);
	entry->archive = NULL;
	entry->archive_sql = NULL;
	if (entry->feature != NULL)
		pfree(entry->feature);
	entry->feature = NULL;
	entry->valid = false;
}

/*
 * invalidate_limit_cache(relation regclass): every backend drops what it
 * cached of the table's limit registrations, at this transaction's commit
 * (and this one at once, and again if it rolls back).  enforce_limit and
 * unenforce_limit call it: on the extension's own tables no trigger is
 * created or dropped that would do it.
 */
Datum
invalidate_limit_cache(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"relation\" of invalidate_limit_cache() must not be null")));
	CacheInvalidateRelcacheByRelid(PG_GETARG_OID(0));
	PG_RETURN_VOID();
}

/*
 * limit_registrations_invalidate(): AFTER ... FOR EACH STATEMENT trigger on
 * subscription.limited_table.  Where Citus is present, limited_table is a
 * reference table and the guards run on the shards, on every node: the
 * entries a node's backends cached are keyed by the shards' OIDs, which
 * invalidate_limit_cache() on the coordinator does not reach, and a
 * registration of the extension's own table (sub-accounts on
 * subscription.account, K7) creates no trigger whose DDL would.  The
 * trigger fires on each node's placement, in the node's part of the
 * transaction: every backend of that node drops every cached registration,
 * at its commit (and this one at once).  Registrations change as rarely as
 * DDL.  On a single server invalidate_limit_cache() does it, table by
 * table, and the trigger invalidates limited_table's own entry, which
 * record_usage's cache of the features used without rows watches.
 */
Datum
limit_registrations_invalidate(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("limit_registrations_invalidate() must be called as a trigger")));

	/*
	 * S13: the back office executes every function; on a table of its own
	 * this trigger would make every backend of the node drop its whole
	 * relation cache at each statement.  It is limited_table's alone.
	 */
	RequireOwnTableTrigger(fcinfo, "limit_registrations_invalidate");
	if (CitusPresent())
		CacheInvalidateRelcacheAll();
	else
	{
		/*
		 * limited_table's own entry, by which no guard's registration is
		 * keyed: record_usage's cache of the features used without rows
		 * (src/usage.c) drops them, a feature registered since being counted
		 * from its table's rows (issue 21)
		 */
		CacheInvalidateRelcache(((TriggerData *) fcinfo->context)->tg_relation);
	}
	return PointerGetDatum(NULL);
}

static bool
IsIntegerType(Oid type)
{
	return type == INT2OID || type == INT4OID || type == INT8OID;
}

/*
 * A registered column that holds a number must be smallint, integer or
 * bigint itself: not a domain, nor a type whose casts its owner wrote.
 */
static void
RequireIntegerColumn(Relation rel, const char *feature, AttrNumber attnum)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);

	if (!IsIntegerType(att->atttypid))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of table \"%s\" registered for feature \"%s\" must be smallint, integer or bigint",
						NameStr(att->attname), RelationGetRelationName(rel), feature),
				 errdetail("Its type is %s.", format_type_be(att->atttypid)),
				 errtable(rel)));
}

/*
 * The registration of (rel, feature): what its rows count (C4-C11, K7), its
 * columns checked against the table as it is now.  The one reader of
 * limited_table for the guard and the recount.  False when the feature is
 * not registered on the table.  latest: read it with the latest snapshot,
 * like a catalog (the guard's cache, see GetLimitEntry); otherwise with
 * the statement's.  *first: whether it is the table's first registration;
 * *metered: whether the feature has a meter (issue 21; never in 1.0).
 * Runs inside SPI.
 */
static bool
ReadLimitCounting(Relation rel, const char *feature, bool latest, LimitCounting *c, bool *first, bool *metered)
{
	static SPIPlanPtr registration_plan[2];
	static SPIPlanPtr registration_by_name_plan = NULL;
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		values[2];
	SPIPlanPtr	plan;
	TupleDesc	desc = RelationGetDescr(rel);
	char	   *value;
	int			ret;

	/*
	 * The registration is the feature's (unique in limited_table), if it
	 * is of this table's logical table: a shard is its distributed table.
	 * Where Citus is present, limited_table is a reference table whose
	 * regclass may be another node's OID: the table is compared by its
	 * name there (relation_name, from 1.1 on), and by OID on a single
	 * server, where the library serves 1.0 too, and on a node of Citus
	 * whose SQL is still at 1.0 (none of its tables distributed yet,
	 * before ALTER EXTENSION subscription UPDATE: issue 17).
	 */
	values[0] = ObjectIdGetDatum(LogicalRelation(RelationGetRelid(rel)));
	values[1] = CStringGetTextDatum(feature);
#define REGISTRATION_SQL(table_is, METERED) \
	"SELECT t.on_downgrade, t.account_column::text, t.value_column::text," \
	"       t.position = (SELECT min(x.position) FROM subscription.limited_table AS x" \
	"                      WHERE x.relation = t.relation), " METERED \
	"  FROM subscription.limited_table AS t" \
	" WHERE t.feature = $2 AND " table_is
#define REGISTRATION_METERED "EXISTS (SELECT FROM subscription.meter AS m WHERE m.feature = t.feature)"
	if (CitusPresent() && LimitsVersioned())
		plan = KeptPlan(&registration_by_name_plan,
						REGISTRATION_SQL("t.relation_name = subscription.relation_name($1)", REGISTRATION_METERED),
						2, argtypes);
	else if (LimitsVersioned())
		plan = KeptPlan(&registration_plan[1], REGISTRATION_SQL("t.relation = $1", REGISTRATION_METERED), 2, argtypes);
	else
		plan = KeptPlan(&registration_plan[0], REGISTRATION_SQL("t.relation = $1", "false"), 2, argtypes);
	if (latest)
		ret = SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
								   true, false, 1);
	else
		ret = SPI_execute_plan(plan, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the limit registration");
	if (SPI_processed != 1)
		return false;

	c->policy = DowngradePolicyOf(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	c->account_column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	if (first != NULL)
		*first = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4), "t") == 0;
	if (metered != NULL)
		*metered = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5), "t") == 0;
	c->account_attnum = SPI_fnumber(desc, c->account_column);
	c->value_attnum = value != NULL ? SPI_fnumber(desc, value) : 0;
	if (c->account_attnum <= 0 || (value != NULL && c->value_attnum <= 0))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("a column registered for feature \"%s\" is missing from table \"%s\"",
						feature, RelationGetRelationName(rel)),
				 errhint("Register the feature again with subscription.unenforce_limit() and subscription.enforce_limit()."),
				 errtable(rel)));
	/* a number is read in C, and cast in SQL: only the built-in integers */
	RequireIntegerColumn(rel, feature, c->account_attnum);
	if (c->policy == POLICY_CAP || c->policy == POLICY_SCALE)
		RequireIntegerColumn(rel, feature, c->value_attnum);
	c->account_type = TupleDescAttr(desc, c->account_attnum - 1)->atttypid;
	c->value_type = c->value_attnum > 0 ? TupleDescAttr(desc, c->value_attnum - 1)->atttypid : InvalidOid;
	c->account_column = pstrdup(quote_identifier(c->account_column));
	c->value_column = value != NULL ? pstrdup(quote_identifier(value)) : NULL;
	return true;
}

/* A row (as alias) is limited: one without an account counts for nobody. */
static char *
LimitedRowCondition(const LimitCounting *c, const char *alias)
{
	return psprintf("%s.%s IS NOT NULL", alias, c->account_column);
}

/*
 * What each limited row of source counts, as "SELECT account, d, v" text:
 * its account (bigint), the units it counts (bigint: one per row, one per
 * non-NULL value for detach, the value for scale, none for cap) and, for
 * cap and scale, its value (bigint; NULL otherwise).  also: more
 * conditions on the rows (as r), or NULL.  The recount sums d per account
 * over the table, the statement guard over its transition tables; CountRow
 * says the same of one row in C.
 */
static char *
CountedRowsSql(const LimitCounting *c, const char *source, const char *also)
{
	const char *v = c->value_column != NULL ? psprintf("r.%s", c->value_column) : NULL;
	char	   *units;

	switch (c->policy)
	{
		case POLICY_SCALE:
			units = psprintf("coalesce(%s, 0)::bigint", v);
			break;
		case POLICY_DETACH:
			units = psprintf("(%s IS NOT NULL)::int::bigint", v);
			break;
		case POLICY_CAP:
			units = pstrdup("0::bigint");
			break;
		default:
			units = pstrdup("1::bigint");
			break;
	}
	return psprintf("SELECT r.%s::bigint AS account, %s AS d, %s AS v FROM %s AS r WHERE %s%s%s",
					c->account_column, units,
					c->policy == POLICY_CAP || c->policy == POLICY_SCALE ? psprintf("%s::bigint", v) : "NULL::bigint",
					source, LimitedRowCondition(c, "r"),
					also != NULL ? " AND " : "", also != NULL ? also : "");
}

/* An integer value of a registered column, as int64. */
static int64
ValueAsInt64(Datum value, Oid type)
{
	switch (type)
	{
		case INT2OID:
			return DatumGetInt16(value);
		case INT4OID:
			return DatumGetInt32(value);
		case INT8OID:
			return DatumGetInt64(value);
		default:
			/* ReadLimitCounting refused the column already */
			elog(ERROR, "unexpected type %u of a registered column", type);
	}
	return 0;					/* keep the compiler quiet */
}

/*
 * CountedRowsSql of one row, in C: false for a row that is not limited;
 * otherwise its account, its units and, for cap and scale, its value
 * (*has_value false when NULL).
 */
static bool
CountRow(const LimitCounting *c, TupleTableSlot *slot, int64 *account, int64 *units,
		 bool *has_value, int64 *value)
{
	bool		isnull;
	Datum		datum;

	datum = slot_getattr(slot, c->account_attnum, &isnull);
	if (isnull)
		return false;
	*account = ValueAsInt64(datum, c->account_type);
	*has_value = false;
	*value = 0;
	if (c->value_attnum > 0)
	{
		datum = slot_getattr(slot, c->value_attnum, &isnull);
		*has_value = !isnull;
		if (!isnull && (c->policy == POLICY_CAP || c->policy == POLICY_SCALE))
			*value = ValueAsInt64(datum, c->value_type);
	}
	switch (c->policy)
	{
		case POLICY_SCALE:
			*units = *value;
			break;
		case POLICY_DETACH:
			*units = *has_value ? 1 : 0;
			break;
		case POLICY_CAP:
			*units = 0;
			break;
		default:
			*units = 1;
			break;
	}
	if (c->policy != POLICY_CAP && c->policy != POLICY_SCALE)
		*has_value = false;		/* v is NULL for the others */
	return true;
}

/*
 * The statement's change per account, as "SELECT account, delta, largest,
 * smallest" text, from CountedRowsSql over the transition tables: the units
 * of the new rows less those of the old; for cap and scale, the largest and
 * smallest values written.  It runs as the table's owner (see limit_guard).
 */
static char *
DeltaQuery(const LimitCounting *c, GuardedEvent event)
{
	bool		cap = c->policy == POLICY_CAP;
	char	   *changes;

	switch (event)
	{
		case GUARDED_INSERT:
			changes = psprintf("SELECT n.account, n.d::numeric, n.v FROM (%s) AS n",
							   CountedRowsSql(c, "new_rows", NULL));
			break;
		case GUARDED_DELETE:
			changes = psprintf("SELECT o.account, -(o.d::numeric), NULL::bigint FROM (%s) AS o",
							   CountedRowsSql(c, "old_rows", NULL));
			break;
		default:
			/*
			 * cap judges the values an UPDATE adds, not those it leaves as
			 * they were: a row already above a lowered limit may still have
			 * its other columns updated.
			 */
			if (cap)
				changes = psprintf("SELECT w.account, 0::numeric, w.v FROM"
								   " (SELECT n.account, n.v FROM (%s) AS n"
								   "  EXCEPT ALL SELECT o.account, o.v FROM (%s) AS o) AS w",
								   CountedRowsSql(c, "new_rows", NULL), CountedRowsSql(c, "old_rows", NULL));
			else
				changes = psprintf("SELECT n.account, n.d::numeric, n.v FROM (%s) AS n"
								   " UNION ALL SELECT o.account, -(o.d::numeric), NULL::bigint FROM (%s) AS o",
								   CountedRowsSql(c, "new_rows", NULL), CountedRowsSql(c, "old_rows", NULL));
			break;
	}

	return psprintf("SELECT c.account, sum(c.d)::bigint, max(c.v), min(c.v)"
					"  FROM (%s) AS c(account, d, v)"
					" GROUP BY 1 %s ORDER BY 1",
					changes, cap ? "" : "HAVING sum(c.d) <> 0 OR min(c.v) < 0");
}

static LimitEntry *
GetLimitEntry(Relation rel, const char *feature)
{
	Oid			relid = RelationGetRelid(rel);
	LimitKey	key;
	LimitEntry *entry;
	bool		found;
	bool		first;
	LimitCounting counting;
	bool		metered;
	int			e;

	if (limit_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(LimitKey);
		ctl.entrysize = sizeof(LimitEntry);
		limit_cache = hash_create("subscription limit guard", 16, &ctl, HASH_ELEM | HASH_BLOBS);
		RegisterRelcacheCallback(RELCACHE_LIMITS, LimitCacheCallback);
	}

	memset(&key, 0, sizeof(key));
	key.relid = relid;
	key.feature_hash = hash_bytes_extended((const unsigned char *) feature, strlen(feature), 0);
	entry = hash_search(limit_cache, &key, HASH_ENTER, &found);
	if (!found)
	{
		entry->feature = NULL;
		memset(entry->deltas, 0, sizeof(entry->deltas));
		memset(entry->delta_sql, 0, sizeof(entry->delta_sql));
		entry->archive = NULL;
		entry->archive_sql = NULL;
	}
	else if (entry->valid && strcmp(entry->feature, feature) == 0)
		return entry->registered ? entry : NULL;
	/* invalidated, or two names with one hash: rebuild */
	ForgetLimitEntry(entry);

	/*
	 * The registration is read like a catalog, with the latest snapshot: an
	 * entry outlives the transaction that builds it, so it must not be
	 * built from a REPEATABLE READ snapshot older than the last
	 * enforce_limit or unenforce_limit, whose invalidation may already have
	 * been processed.
	 */
	if (!ReadLimitCounting(rel, feature, true, &counting, &first, &metered))
	{
		/*
		 * The extension's own guards (sub-accounts on subscription.account,
		 * K7) are always attached, so that a dump keeps them, and act once
		 * enforce_limit() has registered them: until then the entry says
		 * "not registered".
		 */
		if (RelationGetNamespace(rel) == get_namespace_oid("subscription", false))
		{
			entry->feature = MemoryContextStrdup(TopMemoryContext, feature);
			entry->registered = false;
			entry->valid = true;
			return NULL;
		}
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("feature \"%s\" is not enforced on table \"%s\"", feature,
						get_rel_name(LogicalRelation(relid))),
				 errhint("Attach limits with subscription.enforce_limit().")));
	}

	entry->feature = MemoryContextStrdup(TopMemoryContext, feature);
	entry->registered = true;
	entry->metered = metered;
	for (e = 0; e < LIMIT_NUM_EVENTS; e++)
		entry->delta_sql[e] = MemoryContextStrdup(TopMemoryContext, DeltaQuery(&counting, (GuardedEvent) e));

	/*
	 * The table's first registration also archives the rows a cascade
	 * deletes during a downgrade, once for all its features: its limited
	 * rows; the row id is the primary key's text (RowIdText), as
	 * apply_downgrade writes it; with the smallest and largest of their
	 * accounts, which a trim named by subscription.trimming checks.
	 */
	if (first)
	{
		char	   *row_id = RowIdText(rel, "o");

		entry->archive_sql =
			MemoryContextStrdup(TopMemoryContext,
								psprintf("SELECT array_agg(r.row_id), array_agg(r.old_row), min(r.account), max(r.account)"
										 "  FROM (SELECT %s AS row_id, to_jsonb(o) AS old_row, o.%s::bigint AS account"
										 "          FROM old_rows AS o WHERE %s) AS r",
										 row_id ? row_id : "NULL::text", counting.account_column,
										 LimitedRowCondition(&counting, "o")));
	}
	/* the names are SPI's: the texts built from them are kept */
	counting.account_column = NULL;
	counting.value_column = NULL;
	entry->counting = counting;
	entry->valid = true;
	return entry;
}

/*
 * A write refused by a limit of 0 on a frozen account (a subscription
 * paused in mode 'freeze', issue 19): 55000 with the way out.  Read only on
 * the way to a refusal; the guard's own statements are unchanged.
 */
static int64 AccountTenant(Relation rel, int64 account);

static void
FrozenLimitRefusal(Relation rel, int64 account)
{
	static SPIPlanPtr frozen_plan = NULL;
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(account), 0};
	char		nulls[2] = {' ', 'n'};
	bool		isnull;
	bool		paused;
	int64		pausing;
	int64		invoice;

	/*
	 * The account's tenant ($2): on a Citus shard, read in the colocated
	 * shard of account (AccountTenant()), as tenant_of() cannot from a
	 * worker's empty table; the functions' statements then name it, reads
	 * of this node's colocated shards that Citus runs inside a shard's
	 * trigger (issue 17).  Elsewhere tenant_of().
	 */
	if (rel != NULL && OidIsValid(ColocatedShard(RelationGetRelid(rel), OwnTable("account"))))
	{
		values[1] = Int64GetDatum(AccountTenant(rel, account));
		nulls[1] = ' ';
	}
	KeptPlan(&frozen_plan, "SELECT subscription.freezing_subscription(t.t, $1), subscription.dunning_freeze_invoice(t.t, $1)"
			 "  FROM coalesce($2, subscription.tenant_of('account', $1)) AS t (t)",
			 2, argtypes);
	if (SPI_execute_plan(frozen_plan, values, nulls, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return;
	pausing = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		return;
	invoice = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &paused));
	/* D4: frozen by its dunning ladder's final action, not by a pause */
	if (!paused)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("account " INT64_FORMAT " is frozen", account),
				 errdetail("Subscription " INT64_FORMAT " is past due: nothing more is written.", pausing),
				 errhint("Pay invoice " INT64_FORMAT " with subscription.record_payment().", invoice),
				 rel != NULL ? errtable(rel) : 0));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("account " INT64_FORMAT " is frozen", account),
			 errdetail("Subscription " INT64_FORMAT " is paused in mode freeze: nothing more is written.", pausing),
			 errhint("Resume it with subscription.resume(" INT64_FORMAT ").", pausing),
			 rel != NULL ? errtable(rel) : 0));
}

/*
 * Why a write is refused, and the way out: the plan or add-on that would
 * allow it.
 */
static void
LimitRefusal(Relation rel, int64 account, const char *feature, int64 used, int64 delta,
			 bool limit_null, int64 limit, bool cap)
{
	Oid			argtypes[2] = {TEXTOID, INT8OID};
	Datum		values[2] = {CStringGetTextDatum(feature), Int64GetDatum(limit)};
	char	   *way_out = NULL;

	/* a frozen account's limits are 0 (issue 19): say why, and the way out */
	if (!limit_null && limit == 0)
		FrozenLimitRefusal(rel, account);

	KeptPlan(&way_out_plan, "(SELECT format('plan \"%s\"', l.plan) FROM subscription.plan_limit AS l"
								"   JOIN subscription.plan AS p ON p.code = l.plan"
								"  WHERE l.feature = $1 AND (l.value IS NULL OR l.value > $2)"
								"    AND upper_inf(l.versions)"
								"  ORDER BY p.rank, l.plan LIMIT 1)"
								" UNION ALL"
								" (SELECT format('add-on \"%s\"', a.code) FROM subscription.addon AS a"
								"   WHERE a.feature = $1 ORDER BY a.units DESC, a.code LIMIT 1)",
								2, argtypes);
	if (SPI_execute_plan(way_out_plan, values, NULL, true, 0) == SPI_OK_SELECT && SPI_processed > 0)
	{
		way_out = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (SPI_processed > 1)
			way_out = psprintf("%s or %s", way_out,
							   SPI_getvalue(SPI_tuptable->vals[1], SPI_tuptable->tupdesc, 1));
	}

	if (cap)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("value " INT64_FORMAT " exceeds the %s limit of account " INT64_FORMAT,
						used, feature, account),
				 errdetail("Limit " INT64_FORMAT ", value written " INT64_FORMAT ".", limit, used),
				 way_out ? errhint("A higher limit comes with %s.", way_out) : 0,
				 rel != NULL ? errtable(rel) : 0));
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("account " INT64_FORMAT " would exceed its %s limit", account, feature),
			 limit_null ? 0 : errdetail("Limit " INT64_FORMAT ", in use " INT64_FORMAT ", requested " INT64_FORMAT ".",
										limit, used, delta),
			 way_out ? errhint("Remove some first, or move to %s.", way_out) : 0,
			 rel != NULL ? errtable(rel) : 0));
}

/*
 * Whether the SQL has the catalog's limit version (issue 17): version 1.0
 * of the SQL, before its update, has none, and its stored limits are the
 * limits.
 */
bool
LimitsVersioned(void)
{
	return OidIsValid(get_relname_relid("limit_catalog_versions", get_namespace_oid("subscription", false)));
}

/*
 * On Citus (distribute() has run), usage_counter is distributed by tenant:
 * the guard's statements name it, so that from a trigger on a shard each
 * runs on that tenant's colocated counter shard, the one statement Citus
 * allows there.  An application table's account column is then the tenant
 * (a root account, docs/citus.md).  Citus also refuses an UPDATE that calls
 * a STABLE function on the row's columns: the counter is read, with its
 * limit as the guard checks it (COUNTER_LIMIT), and locked first; then
 * updated with the values in hand.
 */
bool
CountersOnCitus(void)
{
	return CitusTable(OwnTable("usage_counter"));
}

/*
 * The counter with its stored limit and the catalog's limit version that
 * limit was computed at.  $3 is unused; kept so that both plans take the
 * same arguments.
 */
#define CITUS_COUNTER_SQL(LOCK) \
	"SELECT u.used, u.limit_value, coalesce(u.limit_version, $3::bigint[])" \
	"  FROM subscription.usage_counter AS u" \
	" WHERE u.tenant_id = $5 AND u.account_id = $1 AND u.feature = $2 FOR " LOCK " OF u"

/* The catalog's limit version, read from its view: Citus plans no
 * statement into which a SQL function over its tables is inlined */
static Datum
CatalogLimitVersion(void)
{
	bool		isnull;

	static SPIPlanPtr plan = NULL;

	KeptPlan(&plan, "SELECT v.version FROM subscription.limit_catalog_versions AS v", 0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the catalog's limit version");
	return datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull), false, -1);
}

/*
 * K7 on Citus: the tenant of an account (its root account's id), which its
 * counter is keyed by.  From the guard on a shard of an application table
 * (rel), the colocated shard of subscription.account holds the account's
 * row: the table is distributed by the tenant, or by the account when its
 * accounts are root accounts, their own tenants.  It is read there, by the
 * shard's name (the one statement Citus allows inside a shard's trigger),
 * by the account's id.  Elsewhere the account is its own tenant (a root
 * account, docs/citus.md), and so is one that shard does not hold but
 * would as a root account (it does not exist: the checks that follow
 * say so).  An account that shard would not hold is a row on the shard of
 * another tenant: Citus placed it by the key its statement named, and a
 * BEFORE trigger of the table's own gave it another account since; it
 * would be counted here, and found by no query routed by its account
 * (gap 2 of issue 17): refused.
 */
static int64
AccountTenant(Relation rel, int64 account)
{
	Oid			relid = rel != NULL ? RelationGetRelid(rel) : InvalidOid;
	Oid			accounts = OidIsValid(relid) ? ColocatedShard(relid, OwnTable("account")) : InvalidOid;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(account)};
	char	   *sql;
	bool		isnull;
	int64		tenant;

	if (!OidIsValid(accounts))
		return account;
	/* a shard's name is fixed for its life, but not known before: not kept */
	sql = psprintf("SELECT tenant_id FROM %s WHERE id OPERATOR(pg_catalog.=) $1",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(accounts)),
											  get_rel_name(accounts)));
	if (SPI_execute_with_args(sql, 1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the tenant of account " INT64_FORMAT, account);
	if (SPI_processed != 1)
	{
		if (!ShardHoldsKey(accounts, account))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("a row of account " INT64_FORMAT " is on a shard of another tenant", account),
					 errdetail("On Citus a row stays on the shard of the key its statement named; a BEFORE trigger of table \"%s\" gave it another account.",
							   get_rel_name(LogicalRelation(relid))),
					 errhint("Write the row with its own account's key."),
					 errtable(rel)));
		return account;
	}
	tenant = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return isnull ? account : tenant;
}

/* The limit of (account, feature) in the account's tenant */
static Datum
CitusLimitOf(Datum tenant, Datum account, Datum feature, bool *isnull)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {account, feature, tenant};

	KeptPlan(&plan, "SELECT subscription.limit_of($3, $1, $2)", 3, argtypes);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not compute the limit of account " INT64_FORMAT, DatumGetInt64(account));
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
}

/* U3: where the new counter of (account, feature) closes its period (usage_closes) */
static Datum
CitusUsageCloses(Datum tenant, Datum account, Datum feature, bool *isnull)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {account, feature, tenant};

	KeptPlan(&plan, "SELECT subscription.usage_closes($3, $1, $2)", 3, argtypes);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not find where the usage period of account " INT64_FORMAT " closes", DatumGetInt64(account));
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
}

/*
 * The limit of a counter of the tenant (account, feature) whose stored
 * limit was computed at another version of the catalog: counter_limit(),
 * the guard's rule on a single server, given the tenant.
 */
static Datum
CitusCounterLimit(Datum tenant, Datum account, Datum feature, Datum stored_version, bool no_version,
				  Datum version, bool *isnull)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[5] = {INT8OID, TEXTOID, INT8ARRAYOID, INT8ARRAYOID, INT8OID};
	Datum		values[5] = {account, feature, stored_version, version, tenant};
	char		nulls[5] = {' ', ' ', no_version ? 'n' : ' ', ' ', ' '};

	KeptPlan(&plan, "SELECT subscription.counter_limit($1, $2, NULL, $3, $4, $5)", 5, argtypes);
	if (SPI_execute_plan(plan, values, nulls, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not compute the limit of account " INT64_FORMAT, DatumGetInt64(account));
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
}

/* A recomputed limit stored in the counter, with the catalog's version */
static void
StoreCitusLimit(Datum tenant, Datum account, Datum feature, Datum limit, bool limit_null, Datum version)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[5] = {INT8OID, TEXTOID, INT8OID, INT8ARRAYOID, INT8OID};
	Datum		values[5] = {account, feature, limit, version, tenant};
	char		nulls[5] = {' ', ' ', limit_null ? 'n' : ' ', ' ', ' '};

	KeptPlan(&plan,
			 "UPDATE subscription.usage_counter SET limit_value = $3, limit_version = $4"
			 " WHERE tenant_id = $5 AND account_id = $1 AND feature = $2", 5, argtypes);
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not store the limit of account " INT64_FORMAT, DatumGetInt64(account));
}

/*
 * Read and lock the counter of (account, feature) on Citus, in the
 * account's tenant (K7, AccountTenant()), creating it on the account's first write: its use, and its limit (NULL:
 * unlimited) with the catalog's limit version it was computed at.
 */
static void
ReadCitusCounter(int64 tenant, int64 account, const char *feature, bool exclusive,
				 int64 *used, int64 *limit, bool *limit_null, Datum *version)
{
	static SPIPlanPtr read_plan[2];
	static SPIPlanPtr create_plan = NULL;
	Oid			argtypes[6] = {INT8OID, TEXTOID, INT8ARRAYOID, INT8OID, INT8OID, TIMESTAMPTZOID};
	Datum		values[6] = {Int64GetDatum(account), CStringGetTextDatum(feature), 0, 0, Int64GetDatum(tenant), 0};
	char		nulls[6] = {' ', ' ', 'n', ' ', ' ', 'n'};
	bool		isnull;
	int			attempt;

	*version = (Datum) 0;
	KeptPlan(&read_plan[exclusive], exclusive ? CITUS_COUNTER_SQL("UPDATE") : CITUS_COUNTER_SQL("KEY SHARE"),
			 5, argtypes);
	for (attempt = 0; attempt < 2; attempt++)
	{
		if (SPI_execute_plan(read_plan[exclusive], values, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the usage counter");
		if (SPI_processed == 1)
		{
			Datum		stored;
			Datum		current;
			Datum		recomputed;

			*used = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			*limit = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, limit_null));
			stored = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);

			/*
			 * The catalog's limit version, read on this node: a row's stamp
			 * is its content's, the same on every node (stamp_limit_change),
			 * so a catalog change made on the coordinator moves it here.
			 * When it moved since the stored limit was computed, the limit
			 * is recomputed (counter_limit's rule: one piece of code, the
			 * SQL function, given the tenant) and, with the row locked for
			 * update, stored with the version.
			 */
			current = CatalogLimitVersion();
			if (!isnull && DatumGetBool(OidFunctionCall2(F_ARRAY_EQ, stored, current)))
				return;
			recomputed = CitusCounterLimit(values[4], values[0], values[1], stored, isnull, current, limit_null);
			*limit = *limit_null ? 0 : DatumGetInt64(recomputed);
			*version = current;
			if (exclusive)
				StoreCitusLimit(values[4], values[0], values[1], recomputed, *limit_null, current);
			return;
		}
		/* the account's first write of the feature: its counter, at its limit */
		values[2] = CatalogLimitVersion();
		nulls[2] = ' ';
		values[3] = CitusLimitOf(values[4], values[0], values[1], &isnull);
		nulls[3] = isnull ? 'n' : ' ';
		/* U3: as on a single server (EnsureCounter), it closes with its period */
		values[5] = CitusUsageCloses(values[4], values[0], values[1], &isnull);
		nulls[5] = isnull ? 'n' : ' ';
		KeptPlan(&create_plan,
				 "INSERT INTO subscription.usage_counter (tenant_id, account_id, feature, limit_version, limit_value, closes)"
				 " VALUES ($5, $1, $2, $3, $4, $6) ON CONFLICT DO NOTHING", 6, argtypes);
		if (SPI_execute_plan(create_plan, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not create the usage counter");
	}
	elog(ERROR, "could not create the usage counter of account " INT64_FORMAT, account);
}

static void RequireAccount(int64 tenant, int64 account);

/*
 * The catalog's limit version as the guard's UPDATE compares it (issue 17),
 * kept between statements: read with the latest snapshot (the view
 * limit_catalog_versions, four scans of the catalog tables) only after a
 * statement changed one of those tables, whose trigger
 * limit_catalog_invalidates invalidates the table's relcache entry, for
 * every backend at its commit and for its own at once and again if it rolls
 * back.  The guard takes the invalidations that arrived (as a lock does)
 * before it looks, so a change whose commit returned before the guard's
 * statement started is seen.  PostgreSQL makes a commit visible just before
 * it sends the commit's invalidations: a write in that instant may still
 * check the stored limit, as if it had come first.  The callback only
 * marks; the array given to a statement is a copy.
 */
#define LIMIT_CATALOG_TABLES 4
static Datum kept_catalog_version = (Datum) 0;
static bool kept_catalog_version_valid = false;
static uint64 catalog_invalidations = 0;
static Oid	limit_catalog_relids[LIMIT_CATALOG_TABLES];

static void
LimitCatalogCallback(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < LIMIT_CATALOG_TABLES; i++)
		if (relid == InvalidOid || relid == limit_catalog_relids[i])
		{
			kept_catalog_version_valid = false;
			catalog_invalidations++;
			return;
		}
}

static Datum
GuardCatalogVersion(void)
{
	static bool callback_registered = false;
	static SPIPlanPtr plan = NULL;
	static const char *const tables[LIMIT_CATALOG_TABLES] = {"plan_limit", "addon", "suite_component", "plan"};
	uint64		invalidations;
	bool		isnull;
	Datum		version;
	MemoryContext old;
	int			i;

	if (!callback_registered)
	{
		RegisterRelcacheCallback(RELCACHE_LIMIT_CATALOG, LimitCatalogCallback);
		callback_registered = true;
	}
	AcceptInvalidationMessages();
	if (!kept_catalog_version_valid)
	{
		for (i = 0; i < LIMIT_CATALOG_TABLES; i++)
			limit_catalog_relids[i] = OwnTable(tables[i]);
		invalidations = catalog_invalidations;
		KeptPlan(&plan, "SELECT v.version FROM subscription.limit_catalog_versions AS v", 0, NULL);
		if (SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(), InvalidSnapshot, true, false, 1) != SPI_OK_SELECT
			|| SPI_processed != 1)
			elog(ERROR, "could not read the catalog's limit version");
		version = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		old = MemoryContextSwitchTo(TopMemoryContext);
		version = datumCopy(version, false, -1);
		MemoryContextSwitchTo(old);
		if (kept_catalog_version != (Datum) 0)
			pfree(DatumGetPointer(kept_catalog_version));
		kept_catalog_version = version;
		/* an invalidation taken while it was read: read it again next time */
		kept_catalog_version_valid = invalidations == catalog_invalidations;
	}
	return datumCopy(kept_catalog_version, false, -1);
}

/*
 * limit_catalog_invalidates(): AFTER ... FOR EACH STATEMENT trigger on the
 * tables the catalog's limit version is computed from: every backend reads
 * the version again (GuardCatalogVersion) after this transaction's commit,
 * and this one at once and again if it rolls back.  Also their AFTER ...
 * FOR EACH ROW trigger enabled in replica mode only: a logical replication
 * subscriber's apply worker fires no statement trigger.
 */
Datum
limit_catalog_invalidates(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("limit_catalog_invalidates() must be called as a trigger")));
	CacheInvalidateRelcache(((TriggerData *) fcinfo->context)->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * U3: subscription.close_usage(): the counter of (account, feature), whose
 * period ends at or before at, keeps the figures of each period ended and
 * starts the one that holds at.  tenant: NULL where the caller does not
 * know it (a registered table's write on a single server).
 */
static void
CloseUsage(Datum tenant, bool no_tenant, Datum account, Datum feature, Datum at, bool rows)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[5] = {INT8OID, INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID};
	Datum		values[5] = {tenant, account, feature, at, BoolGetDatum(rows)};
	char		nulls[5] = {no_tenant ? 'n' : ' ', ' ', ' ', ' ', ' '};

	KeptPlan(&plan, "SELECT subscription.close_usage($1, $2, $3, $4, $5)", 5, argtypes);
	if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not close the usage period of account " INT64_FORMAT, DatumGetInt64(account));
}

/*
 * Whether a feature has a meter, read on this node (meter is a reference
 * table on Citus): a worker's cache of the registration is not invalidated
 * by a meter created or removed on the coordinator (meter_invalidates does
 * nothing there), so the guard on a shard reads it with each write.
 */
static bool
CitusFeatureMetered(Datum feature)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {feature};
	bool		isnull;

	KeptPlan(&plan, "SELECT EXISTS (SELECT FROM subscription.meter AS m WHERE m.feature = $1)", 1, argtypes);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the meter of feature \"%s\"", TextDatumGetCString(feature));
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * MoveUsage() on Citus: the counter read and locked, then moved.  tenant:
 * the account's tenant where the caller knows it (record_usage, rel NULL),
 * else found from the shard of account colocated with rel's.  As on a
 * single server, a registered table's feature without a meter leaves the
 * accumulators out (U1); usage without rows always moves them.
 */
static int64
MoveCitusUsage(Relation rel, int64 tenant, int64 account, const char *feature, int64 delta, bool detach,
			   TimestampTz at)
{
	/* [0] without the accumulators, [1] with them */
	static SPIPlanPtr move_plan[2];
	SPIPlanPtr	plan;
	bool		metered;
	Oid			argtypes[6] = {INT8OID, TEXTOID, INT8OID, TIMESTAMPTZOID, INT8OID, BOOLOID};
	Datum		values[6];
	int64		used;
	int64		limit;
	bool		limit_null;
	Datum		version;
	bool		isnull;
	int			attempt;

	if (rel != NULL)
		tenant = AccountTenant(rel, account);
	else
		RequireAccount(tenant, account);
	ReadCitusCounter(tenant, account, feature, true, &used, &limit, &limit_null, &version);
	if (delta > 0 && !limit_null && (detach ? !(limit > 0) : used + delta > limit))
		LimitRefusal(rel, account, feature, used, delta, limit_null, limit, false);
	values[0] = Int64GetDatum(account);
	values[1] = CStringGetTextDatum(feature);
	values[2] = Int64GetDatum(delta);
	values[3] = TimestampTzGetDatum(at);
	values[4] = Int64GetDatum(tenant);
	values[5] = BoolGetDatum(rel != NULL);
	metered = rel == NULL || CitusFeatureMetered(values[1]);
#define CITUS_MOVE_SQL(ACCUMULATORS) \
	"UPDATE subscription.usage_counter SET used = used + $3" ACCUMULATORS \
	" WHERE tenant_id = $5 AND account_id = $1 AND feature = $2 AND " METER_IN_PERIOD("", "$4") \
	" RETURNING used"
	plan = metered ? KeptPlan(&move_plan[1], CITUS_MOVE_SQL(", " METER_ACCUMULATORS("", "$4")), 6, argtypes)
		: KeptPlan(&move_plan[0], CITUS_MOVE_SQL(""), 6, argtypes);
	for (attempt = 0; attempt < 2; attempt++)
	{
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not move the usage counter");
		if (SPI_processed == 1)
			return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		/* U3: the write comes after the period's end (the row is locked) */
		CloseUsage(values[4], false, values[0], values[1], values[3], rel != NULL);
	}
	elog(ERROR, "could not move the usage counter of account " INT64_FORMAT, account);
	return 0;					/* keep the compiler quiet */
}

/*
 * The recount's counters on Citus: one statement per account, each on its
 * tenant's shard (an INSERT ... SELECT over the accounts would join them
 * across shards, which Citus refuses).  values: $2 the feature, $3 and $4
 * the accounts and their use; a zero use of a single account (not
 * all_accounts) writes only a counter that exists.
 */
static uint64
WriteCitusCounters(Datum *values, bool all_accounts)
{
	static SPIPlanPtr upsert_plan = NULL;
	static SPIPlanPtr zero_plan = NULL;
	Oid			argtypes[5] = {INT8OID, TEXTOID, INT8OID, INT8ARRAYOID, INT8OID};
	Datum	   *accounts;
	Datum	   *used;
	int			naccounts;
	int			nused;
	int			i;
	uint64		changed = 0;
	Datum		version = CatalogLimitVersion();

	deconstruct_array(DatumGetArrayTypeP(values[2]), INT8OID, 8, FLOAT8PASSBYVAL, 'd', &accounts, NULL, &naccounts);
	deconstruct_array(DatumGetArrayTypeP(values[3]), INT8OID, 8, FLOAT8PASSBYVAL, 'd', &used, NULL, &nused);
	KeptPlan(&upsert_plan,
			 "INSERT INTO subscription.usage_counter AS u (tenant_id, account_id, feature, used, limit_version, limit_value)"
			 " VALUES ($1, $1, $2, $3, $4, $5)"
			 " ON CONFLICT ON CONSTRAINT usage_counter_pkey DO UPDATE"
			 "    SET used = excluded.used, limit_value = excluded.limit_value, limit_version = excluded.limit_version"
			 "  WHERE (u.used, u.limit_value) IS DISTINCT FROM (excluded.used, excluded.limit_value)", 5, argtypes);
	KeptPlan(&zero_plan,
			 "UPDATE subscription.usage_counter SET used = 0"
			 " WHERE tenant_id = $1 AND account_id = $1 AND feature = $2 AND used <> 0", 2, argtypes);
	for (i = 0; i < naccounts && i < nused; i++)
	{
		Datum		args[5] = {accounts[i], values[1], used[i], version, 0};
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
		bool		upsert = all_accounts || DatumGetInt64(used[i]) != 0;
		bool		isnull;

		if (upsert)
		{
			args[4] = CitusLimitOf(accounts[i], accounts[i], values[1], &isnull);
			nulls[4] = isnull ? 'n' : ' ';
		}
		if (SPI_execute_plan(upsert ? upsert_plan : zero_plan, args, nulls, false, 0) < 0)
			elog(ERROR, "could not write the usage counter of account " INT64_FORMAT, DatumGetInt64(accounts[i]));
		changed += SPI_processed;
	}
	return changed;
}

/* The counter of (account $1, feature $2), created on the account's first write. */
static void
EnsureCounter(Datum *values)
{
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	int			v = LimitsVersioned();

#define ENSURE_COUNTER_SQL(COLUMN, VALUE, FROM) \
	"INSERT INTO subscription.usage_counter (account_id, feature, limit_value" COLUMN ")" \
	" SELECT $1, $2, subscription.limit_of($1, $2)" VALUE FROM \
	" ON CONFLICT DO NOTHING"
	/* U3: a new counter closes with the period of the usage price's subscription */
	KeptPlan(&ensure_counter_plan[v],
			 v ? ENSURE_COUNTER_SQL(", limit_version, closes",
									", c.version, subscription.usage_closes("
									"(SELECT a.tenant_id FROM subscription.account AS a WHERE a.id = $1), $1, $2)",
									" FROM " CATALOG_LIMIT_VERSION)
			 : ENSURE_COUNTER_SQL("", "", ""), 2, argtypes);
	if (SPI_execute_plan(ensure_counter_plan[v], values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not create the usage counter");
}

/*
 * Under REPEATABLE READ and SERIALIZABLE, a refusal is made from the
 * counter as the transaction's snapshot sees it: one that a concurrent
 * transaction has changed since is a serialization failure (40001), as
 * the UPDATE that found it would have been, and the retry judges it.
 */
static void
RefuseOnlyWhatWeSee(SPIPlanPtr read_usage, int64 used, bool limit_null, int64 limit, Datum *values)
{
	Snapshot	crosscheck = GuardCrosscheckSnapshot();
	bool		isnull;
	bool		seen_limit_null;

	if (crosscheck == InvalidSnapshot)
		return;
	if (SPI_execute_snapshot(read_usage, values, NULL, crosscheck, InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the usage counter");
	if (SPI_processed != 1 ||
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) != used ||
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &seen_limit_null)) != limit ||
		seen_limit_null != limit_null)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to concurrent update")));
}

/*
 * move_usage's account (rel NULL): an unknown one is P0002 as everywhere,
 * not the counter's foreign key; looked up in its tenant (one shard on
 * Citus), so that a counter of an account of another tenant is not moved
 * either.  Only where no counter was moved: the UPDATE names the tenant.
 */
static void
RequireAccount(int64 tenant, int64 account)
{
	static SPIPlanPtr account_plan = NULL;
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(tenant), Int64GetDatum(account)};

	KeptPlan(&account_plan, "SELECT subscription.require_account($1, $2)", 2, argtypes);
	if (SPI_execute_plan(account_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up account " INT64_FORMAT, account);
}

/*
 * Move one account's counter by delta under its limit, or refuse; returns
 * the counter's new use (0 when there is no counter to count down).  rel
 * is the table written, or NULL for record_usage (no table): outside a
 * trigger, the counter's own triggers fire at the end of the UPDATE.
 * tenant: the account's tenant where rel is NULL (record_usage names it;
 * Citus needs it, there being no table's shard to find it from), else 0:
 * a counter of the account in another tenant is not moved (P0002).
 * metered: whether the meter accumulators move (the registration has a
 * meter, or usage without rows); else the statement leaves them out.
 */
static int64
MoveUsage(Relation rel, int64 tenant, int64 account, const char *feature, int64 delta, bool detach,
		  bool metered, TimestampTz at)
{
	Oid			argtypes[8] = {INT8OID, TEXTOID, INT8OID, BOOLOID, TIMESTAMPTZOID, BOOLOID, INT8OID, INT8ARRAYOID};
	Datum		values[8];
	bool		isnull;
	int64		used;
	int64		limit;
	bool		limit_null;
	int			attempt;
	int			v = LimitsVersioned();
	SPIPlanPtr	move_plan;

	if (v && CountersOnCitus())
		return MoveCitusUsage(rel, tenant, account, feature, delta, detach, at);
	values[0] = Int64GetDatum(account);
	values[1] = CStringGetTextDatum(feature);
	values[2] = Int64GetDatum(delta);
	values[3] = BoolGetDatum(detach);
	/* the meters' time: the write's (see the callers) */
	values[4] = TimestampTzGetDatum(at);
	/* U3: whether the use is rows (they stay counted in the next period) */
	values[5] = BoolGetDatum(rel != NULL);
	values[6] = Int64GetDatum(tenant);
	/* the catalog's limit version, kept (GuardCatalogVersion) */
	values[7] = v ? GuardCatalogVersion() : (Datum) 0;

	/*
	 * The counter row carries the limit (kept by subscription.refresh_limits
	 * for the account's own rows), with the catalog's limit version it was
	 * computed at: when the catalog's version moved since, the limit is
	 * recomputed and stored by this same statement (COUNTER_LIMIT, issue
	 * 17), so the check is this one row.  The catalog's version is given
	 * ($8, a one-row relation of the statement, read only after a catalog
	 * change: GuardCatalogVersion), the counter's columns read again if the
	 * row is re-checked after a concurrent update.  detach limits nothing but inclusion: any
	 * non-NULL value where the feature is included (limit NULL or above 0).
	 *
	 * One statement in three forms from one text (issue 21): a write of a
	 * registered table whose feature has no meter leaves the accumulators
	 * out (the entry's metered, kept with the registration and invalidated
	 * with it: a meter's trigger invalidates the table); usage without
	 * rows also names the tenant ($7).
	 */
#define MOVE_USAGE_SQL(SET, FROM, LIMIT, WHERE) \
	"UPDATE subscription.usage_counter AS u SET used = u.used + $3" SET FROM \
	" WHERE u.account_id = $1 AND u.feature = $2" WHERE \
	"   AND ($3 <= 0 OR " LIMIT " IS NULL" \
	"        OR CASE WHEN $4 THEN " LIMIT " > 0 ELSE u.used + $3 <= " LIMIT " END)" \
	" RETURNING u.used"
#define MOVE_USAGE_11_SQL(ACCUMULATORS, TENANT) \
	MOVE_USAGE_SQL(", limit_value = " COUNTER_LIMIT ", limit_version = c.version" ACCUMULATORS, \
				   " FROM (SELECT $8) AS c (version)", COUNTER_LIMIT, TENANT " AND " METER_IN_PERIOD("u.", "$5"))
	if (!v)
		move_plan = KeptPlan(&move_usage_plan[0], MOVE_USAGE_SQL("", "", "u.limit_value", ""), 7, argtypes);
	else if (rel == NULL)
		move_plan = KeptPlan(&move_usage_plan_11[1],
							 MOVE_USAGE_11_SQL(", " METER_ACCUMULATORS("u.", "$5"), " AND u.tenant_id = $7"),
							 8, argtypes);
	else if (metered)
		move_plan = KeptPlan(&move_usage_plan[1], MOVE_USAGE_11_SQL(", " METER_ACCUMULATORS("u.", "$5"), ""),
							 8, argtypes);
	else
		move_plan = KeptPlan(&move_usage_plan_11[0], MOVE_USAGE_11_SQL("", ""), 8, argtypes);
	/* at most: create the counter, close its ended periods, move it */
	for (attempt = 0; attempt < 3; attempt++)
	{
		if (SPI_execute_snapshot(move_plan, values, NULL, GetLatestSnapshot(), GuardCrosscheckSnapshot(),
								 false, rel == NULL, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not move the usage counter");
		if (SPI_processed == 1)
			return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		/* usage without rows: the account in its tenant first (P0002), whose counter the read finds */
		if (rel == NULL)
			RequireAccount(tenant, account);

#define READ_USAGE_SQL(FROM, LIMIT, ENDED) \
	"SELECT u.used, " LIMIT ", " ENDED " FROM subscription.usage_counter AS u" FROM \
	" WHERE u.account_id = $1 AND u.feature = $2"
		KeptPlan(&read_usage_plan[v],
				 v ? READ_USAGE_SQL(", " CATALOG_LIMIT_VERSION, COUNTER_LIMIT, "NOT " METER_IN_PERIOD("u.", "$5"))
				 : READ_USAGE_SQL("", "u.limit_value", "false"), 6, argtypes);
		if (SPI_execute_snapshot(read_usage_plan[v], values, NULL, GetLatestSnapshot(), InvalidSnapshot,
								 true, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the usage counter");
		if (SPI_processed == 1)
		{
			bool		ended;

			used = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			limit = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &limit_null));
			ended = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
			if (ended)
			{
				/* U3: the write comes after the period's end: close it, then move */
				CloseUsage(Int64GetDatum(tenant), rel != NULL, values[0], values[1], values[4], rel != NULL);
				continue;
			}
			RefuseOnlyWhatWeSee(read_usage_plan[v], used, limit_null, limit, values);
			LimitRefusal(rel, account, feature, used, delta, limit_null, limit, false);
		}
		if (delta <= 0)
			return 0;			/* no counter to count down: its account is going */

		/* the account's first write of the feature: create its counter, then move it */
		EnsureCounter(values);
	}
	elog(ERROR, "could not create the usage counter of account " INT64_FORMAT, account);
	return 0;					/* keep the compiler quiet */
}

/*
 * The counter of a feature used without rows (record_usage, correct_usage)
 * moved by delta under its limit (23514), with the meter accumulators, at
 * the usage's time (at; NULL: the meters' clock); the new use.  Needs SPI
 * connected.
 */
int64
MoveUsageWithoutRows(int64 tenant, int64 account, const char *feature, int64 delta, const TimestampTz *at)
{
	/* U3: the usage's time places it in a period; an infinite one in none */
	if (at != NULL && TIMESTAMP_NOT_FINITE(*at))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("the time of usage must be finite")));
	/*
	 * the usage's time (record_usage's at): a backfill before the period's
	 * end counts in it (U3); none, the meters' clock
	 */
	return MoveUsage(NULL, tenant, account, feature, delta, false, true,
					 at != NULL ? *at : SubscriptionMeterNow());
}

/*
 * LockUsageCounter's rows on a single server: the account (tenant, account)
 * FOR KEY SHARE, then its counter of feature FOR UPDATE, each table locked
 * as SELECT ... FOR UPDATE locks it; false, nothing more locked, where
 * either is not found in the tenant.
 */
static bool
LockUsageRows(int64 tenant, int64 account, Datum feature)
{
	static const char *const tables[2] = {"account", "usage_counter"};
	Datum		keys[2] = {Int64GetDatum(account), feature};
	CommandId	cid = GetCurrentCommandId(true);
	bool		locked = false;
	int			table;

	for (table = 0; table < 2; table++)
	{
		Relation	rel = table_open(OwnTable(tables[table]), RowShareLock);
		TupleTableSlot *row = table_slot_create(rel, NULL);
		Snapshot	latest = RegisterSnapshot(GetLatestSnapshot());
		AttrNumber	tenant_col = RowWriteColumn(rel, "tenant_id");
		bool		isnull;

		locked = FetchRowByTenantKey(rel, latest, &tenant, table + 1, keys, row)
			&& DatumGetInt64(slot_getattr(row, tenant_col, &isnull)) == tenant
			&& LockLatestVersion(rel, latest, cid, row, table == 0 ? LockTupleKeyShare : LockTupleExclusive)
			&& DatumGetInt64(slot_getattr(row, tenant_col, &isnull)) == tenant;
		UnregisterSnapshot(latest);
		ExecDropSingleTupleTableSlot(row);
		table_close(rel, NoLock);
		if (!locked)
			break;
	}
	return locked;
}

/*
 * The counter of a feature used without rows locked FOR UPDATE before its
 * move (record_usage, issue 21), created on the account's first use at its
 * limit (EnsureCounter; ReadCitusCounter on Citus): whoever holds it moves
 * the counter next, so a caller that holds it sees, in its next statement,
 * every call that moved the counter before it, and the keys they wrote.
 * An unknown account of the tenant is P0002.  Needs SPI connected.
 */
void
LockUsageCounter(int64 tenant, int64 account, const char *feature)
{
	static SPIPlanPtr citus_account_plan = NULL;
	Oid			argtypes[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {Int64GetDatum(account), CStringGetTextDatum(feature), Int64GetDatum(tenant)};
	int			attempt;

	if (LimitsVersioned() && CountersOnCitus())
	{
		int64		used;
		int64		limit;
		bool		limit_null;
		Datum		version;

		/*
		 * The account FOR KEY SHARE before the counter FOR UPDATE, as on a
		 * single server below (the review h-rev4, usage_account_delete):
		 * both are the tenant's, one shard each, locked in two statements
		 * (issue 21).  Not found: require_account's P0002.
		 */
		KeptPlan(&citus_account_plan,
				 "SELECT FROM subscription.account AS a WHERE a.tenant_id = $3 AND a.id = $1 FOR KEY SHARE OF a",
				 3, argtypes);
		if (SPI_execute_plan(citus_account_plan, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not lock account " INT64_FORMAT, account);
		if (SPI_processed != 1)
			RequireAccount(tenant, account);
		ReadCitusCounter(tenant, account, feature, true, &used, &limit, &limit_null, &version);
		return;
	}
	/*
	 * The account FOR KEY SHARE before the counter FOR UPDATE (the review
	 * h-rev4): the order of every other writer (the key's INSERT, the
	 * counter's creation reference the account first), and of a DELETE of
	 * the account, which locks it and then, cascading, its counters.  In
	 * the other order the two deadlocked (usage_account_delete).  Each row
	 * found by its key with the latest snapshot and its latest version
	 * locked, waiting for a writer, by the one-row path of the license
	 * counters (src/rowwrite.c, LockLatestVersion: under REPEATABLE READ a row
	 * changed since the transaction's snapshot is 40001, as for SELECT ...
	 * FOR UPDATE): as a statement, its start cost more than its two index
	 * lookups (issue 21).  A row of another tenant is none.
	 */
	/* at most: create the counter, then lock it */
	for (attempt = 0; attempt < 2; attempt++)
	{
		if (LockUsageRows(tenant, account, values[1]))
			return;
		RequireAccount(tenant, account);
		EnsureCounter(values);
	}
	elog(ERROR, "could not create the usage counter of account " INT64_FORMAT, account);
}

/*
 * move_usage(account_id bigint, feature text, delta bigint, in_tenant bigint, at timestamptz) returns bigint
 *
 * correct_usage() (issue 21): the counter of a feature used without rows
 * moved by the guard's own code (MoveUsage), under the same limit (23514)
 * and with the same meter accumulators; the new use.  record_usage() (C,
 * src/usage.c) moves it through the same MoveUsageWithoutRows.
 * Internal: only the extension's functions call it.
 */
Datum
move_usage(PG_FUNCTION_ARGS)
{
	int64		used;
	TimestampTz at = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the arguments of move_usage() must not be null")));
	if (PG_NARGS() > 4 && !PG_ARGISNULL(4))
		at = PG_GETARG_TIMESTAMPTZ(4);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	used = MoveUsageWithoutRows(PG_GETARG_INT64(3), PG_GETARG_INT64(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
								PG_GETARG_INT64(2), PG_NARGS() > 4 && !PG_ARGISNULL(4) ? &at : NULL);
	SPI_finish();
	PG_RETURN_INT64(used);
}

/*
 * cap: every value written must be within the limit.  cap keeps no use,
 * but its counter row carries the limit: reading it FOR KEY SHARE lets the
 * account's writers run side by side and makes them wait for a downgrade,
 * which locks the row FOR UPDATE, and then see its new limit.
 */
static void
CheckCap(Relation rel, int64 account, const char *feature, int64 largest)
{
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(account), CStringGetTextDatum(feature)};
	static SPIPlanPtr cap_plan[2];
	bool		limit_null;
	int64		limit;
	int			attempt;
	int			v = LimitsVersioned();

	if (v && CountersOnCitus())
	{
		int64		used;
		Datum		version;

		ReadCitusCounter(AccountTenant(rel, account), account, feature, false,
						 &used, &limit, &limit_null, &version);
		if (!limit_null && largest > limit)
			LimitRefusal(rel, account, feature, largest, 0, false, limit, true);
		return;
	}

#define CAP_SQL(FROM, LIMIT) \
	"SELECT " LIMIT " FROM subscription.usage_counter AS u" FROM \
	" WHERE u.account_id = $1 AND u.feature = $2 FOR KEY SHARE OF u"
	KeptPlan(&cap_plan[v],
			 v ? CAP_SQL(", " CATALOG_LIMIT_VERSION, COUNTER_LIMIT) : CAP_SQL("", "u.limit_value"),
			 2, argtypes);
	for (attempt = 0; attempt < 2; attempt++)
	{
		if (SPI_execute_snapshot(cap_plan[v], values, NULL, GetLatestSnapshot(), GuardCrosscheckSnapshot(),
								 false, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the limit");
		if (SPI_processed == 1)
		{
			limit = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &limit_null));
			if (!limit_null && largest > limit)
				LimitRefusal(rel, account, feature, largest, 0, false, limit, true);
			return;
		}
		EnsureCounter(values);
	}
	elog(ERROR, "could not create the usage counter of account " INT64_FORMAT, account);
}

/* scale: a negative value would pay for a large one */
static void
RefuseNegativeValue(Relation rel, int64 account, const char *feature, int64 value)
{
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("value " INT64_FORMAT " of feature \"%s\" of account " INT64_FORMAT " is negative",
					value, feature, account),
			 errdetail("A feature counted by the sum of its values takes values of 0 or more."),
			 errtable(rel)));
}

/*
 * The same for a statement that writes one row: its account and value are
 * read from the transition table directly, and one statement moves the
 * counter.
 */
static void
GuardOneRow(Relation rel, LimitEntry *entry, const char *feature,
			Tuplestorestate *rows, bool inserting)
{
	const LimitCounting *c = &entry->counting;
	TupleTableSlot *slot;
	bool		limited;
	bool		has_value;
	int64		account;
	int64		units;
	int64		value;

	slot = OnlyTransitionRow(rows, RelationGetDescr(rel));
	limited = CountRow(c, slot, &account, &units, &has_value, &value);
	ExecDropSingleTupleTableSlot(slot);
	if (!limited)
		return;

	/* as DeltaQuery: the values checked are those written, the old row's none */
	if (!inserting)
		has_value = false;
	if (c->policy == POLICY_CAP)
	{
		if (has_value)
			CheckCap(rel, account, feature, value);
		return;
	}
	if (c->policy == POLICY_SCALE && has_value && value < 0)
		RefuseNegativeValue(rel, account, feature, value);
	if (units != 0)
		MoveUsage(rel, 0, account, feature, inserting ? units : -units, c->policy == POLICY_DETACH, entry->metered,
				  SubscriptionMeterNow());
}

/*
 * Under a trim named by subscription.trimming (a guard on a Citus shard,
 * TrimmingElsewhere), the rows a cascade deleted are archived as that
 * trim's only when they are its: each of the account the setting names
 * (rows' accounts from first to last), and the subscription it names that
 * account's, in the tenant it names (read on the shard of subscriptions
 * colocated with this one, as the extension's owner).  Any session can set
 * the setting: anything else is refused, and the statement with it, so that
 * nothing is filed in another account's archive and no deletion of a trim
 * goes unarchived (issue 17).
 */
static void
RefuseForeignTrimming(Relation rel, int64 tenant, int64 account, int64 subscription_id,
					  int64 first_account, int64 last_account)
{
	Oid			subscriptions = ColocatedShard(RelationGetRelid(rel), OwnTable("subscription"));
	Oid			argtypes[3] = {INT8OID, INT8OID, INT8OID};
	Datum		values[3] = {Int64GetDatum(tenant), Int64GetDatum(subscription_id), Int64GetDatum(account)};
	bool		its = first_account == account && last_account == account && OidIsValid(subscriptions);

	/* a shard's name is fixed for its life, but not known before: not kept */
	if (its &&
		SPI_execute_with_args(psprintf("SELECT FROM %s WHERE tenant_id OPERATOR(pg_catalog.=) $1"
									   "   AND id OPERATOR(pg_catalog.=) $2 AND account_id OPERATOR(pg_catalog.=) $3",
									   quote_qualified_identifier(get_namespace_name(get_rel_namespace(subscriptions)),
																  get_rel_name(subscriptions))),
							  3, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read subscription " INT64_FORMAT, subscription_id);
	if (!its || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("rows deleted from \"%s\" are not of the trim that subscription.trimming names",
						get_rel_name(LogicalRelation(RelationGetRelid(rel)))),
				 errdetail("subscription.trimming names subscription " INT64_FORMAT " of account " INT64_FORMAT
						   " of tenant " INT64_FORMAT "; the rows are of accounts " INT64_FORMAT " to " INT64_FORMAT ".",
						   subscription_id, account, tenant, first_account, last_account),
				 errhint("apply_downgrade() sets subscription.trimming; do not set it by hand."),
				 errtable(rel)));
}

/*
 * During apply_downgrade, the rows of this table that the application's
 * foreign keys delete along with a trimmed row (a domain's rooms) are
 * archived too: nothing goes silently.
 */
static void
ArchiveCascade(TriggerData *trigdata, LimitEntry *entry, const char *feature, bool elsewhere, int64 tenant,
			   int64 account, int64 subscription_id)
{
	bool		isnull;
	IdentitySwitch owner;
	Datum		row_ids;
	Datum		old_rows;
	int64		first_account = 0;
	int64		last_account = 0;
	MemoryContext caller_context;
	CascadedRows *c;

	/* the rows as jsonb are the owner's code's work (casts of its types) */
	BecomeTableOwner(trigdata->tg_relation, &owner);
	KeptPlan(&entry->archive, entry->archive_sql, 0, NULL);
	if (SPI_execute_plan(entry->archive, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the rows deleted from \"%s\"",
			 RelationGetRelationName(trigdata->tg_relation));
	row_ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	old_rows = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
	{
		first_account = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		last_account = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	}
	RestoreIdentity(&owner);
	if (isnull)
		return;					/* none of an account */
	if (elsewhere)
		RefuseForeignTrimming(trigdata->tg_relation, tenant, account, subscription_id, first_account, last_account);

	/*
	 * apply_downgrade archives them after the rows that caused them; under
	 * a trim run by another node's session (Citus), here and now
	 */
	caller_context = MemoryContextSwitchTo(elsewhere ? CurrentMemoryContext : TopTransactionContext);
	c = palloc(sizeof(CascadedRows));
	c->relid = LogicalRelation(RelationGetRelid(trigdata->tg_relation));
	c->feature = pstrdup(feature);
	c->row_ids = datumCopy(row_ids, false, -1);
	c->old_rows = datumCopy(old_rows, false, -1);
	if (!elsewhere)
		TrimmingCascades = lappend(TrimmingCascades, c);
	MemoryContextSwitchTo(caller_context);
	if (elsewhere)
		ArchiveCascaded(tenant, account, subscription_id, c);
}

/*
 * TRUNCATE: the feature's counters of the table's accounts go to 0.  On a
 * single server, every account's.  A Citus shard holds some accounts only,
 * and inside its trigger Citus runs only what executes on this node: the
 * counters reset are those of the usage_counter shard colocated with it
 * (the same accounts), by name.
 */
static void
ResetUsage(Relation rel, const char *feature)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(feature)};
	Oid			relid = RelationGetRelid(rel);
	Oid			counters;
	char	   *sql;
	int			ret;

	if (LogicalRelation(relid) == relid)
	{
		KeptPlan(&reset_usage_plan, "UPDATE subscription.usage_counter SET used = 0"
				 " WHERE feature = $1 AND used <> 0", 1, argtypes);
		if (SPI_execute_plan(reset_usage_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not reset the usage counters");
		return;
	}
	counters = ColocatedShard(relid, OwnTable("usage_counter"));
	if (!OidIsValid(counters))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot truncate shard \"%s\" of table \"%s\" limited for feature \"%s\"",
						RelationGetRelationName(rel), get_rel_name(LogicalRelation(relid)), feature),
				 errdetail("subscription.usage_counter is not distributed colocated with the table."),
				 errhint("Distribute the table with colocate_with => 'subscription.account'."),
				 errtable(rel)));
	/* a shard's name is fixed for its life, but not known before: not kept */
	sql = psprintf("UPDATE %s SET used = 0 WHERE feature OPERATOR(pg_catalog.=) $1"
				   " AND used OPERATOR(pg_catalog.<>) 0",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(counters)),
											  get_rel_name(counters)));
	ret = SPI_execute_with_args(sql, 1, argtypes, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "could not reset the usage counters");
}

/*
 * limit_guard(feature): AFTER ... FOR EACH STATEMENT trigger on a limited table
 */
Datum
limit_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Tuplestorestate *rows;
	Relation	rel;
	const char *feature;
	GuardedEvent event;
	LimitEntry *entry;
	IdentitySwitch extension;
	uint64		i;
	uint64		naccounts;
	int64	   *accounts;
	int64	   *deltas;
	int64	   *largest;
	int64	   *smallest;
	bool	   *no_largest;
	bool		read_by_queries;
	bool		cascade;
	bool		elsewhere = false;
	int64		trim_tenant = 0;
	int64		trim_account = 0;
	int64		trim_subscription = 0;

	event = ClassifyGuardedStatement(fcinfo, "limit_guard", &rows);
	trigdata = (TriggerData *) fcinfo->context;
	if (trigdata->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("limit_guard() takes the feature as its argument"),
				 errhint("Attach it with subscription.enforce_limit().")));
	rel = trigdata->tg_relation;
	feature = trigdata->tg_trigger->tgargs[0];
	if (rows != NULL && tuplestore_tuple_count(rows) == 0)
		return PointerGetDatum(NULL);

	/*
	 * A role given grant_restore() copies the table's rows in: the dump
	 * holds the usage counters too, which are trusted, loaded before or
	 * after these rows, and compared with them by verify() at the end
	 * (docs/design.md#restores).  Limits are never relaxed for other roles.
	 */
	if (event == GUARDED_INSERT && RestoringRole())
		return PointerGetDatum(NULL);

	/*
	 * The counters are the extension's, whoever writes: fixed statements on
	 * them run as the extension's owner.  What reads the written rows runs
	 * as the table's owner (identity.c).  Both switches are per statement.
	 */
	BecomeExtensionOwner(&extension);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	entry = GetLimitEntry(rel, feature);
	if (entry == NULL)
		event = GUARDED_NOTHING;

	/* the queries that read the transition tables see them by name */
	/*
	 * a cascade of apply_downgrade's trim: of this session's, or of another
	 * node's on Citus (subscription.trimming); the table trimmed is a
	 * logical table, and a shard of it is that table
	 */
	cascade = event == GUARDED_DELETE && entry->archive_sql != NULL &&
		(TrimmingSubscription != 0 ? LogicalRelation(RelationGetRelid(rel)) != TrimmingRelation
		 : (elsewhere = TrimmingElsewhere(&trim_tenant, &trim_account, &trim_subscription, RelationGetRelid(rel))));
	read_by_queries = event != GUARDED_NOTHING && event != GUARDED_TRUNCATE &&
		(event == GUARDED_UPDATE || tuplestore_tuple_count(rows) > 1 ||
		 (event == GUARDED_DELETE && TrimmingSubscription != 0) || cascade);
	if (read_by_queries && SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition tables");
	if (cascade)
		ArchiveCascade(trigdata, entry, feature, elsewhere, trim_tenant, trim_account, trim_subscription);

	if (event == GUARDED_NOTHING)
		;						/* not registered */
	else if (event == GUARDED_TRUNCATE)
		ResetUsage(rel, feature);
	else if (event != GUARDED_UPDATE && tuplestore_tuple_count(rows) == 1)
		GuardOneRow(rel, entry, feature, rows, event == GUARDED_INSERT);
	else
	{
		IdentitySwitch owner;

		BecomeTableOwner(rel, &owner);
		KeptPlan(&entry->deltas[event], entry->delta_sql[event], 0, NULL);
		if (SPI_execute_plan(entry->deltas[event], NULL, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not sum the changes of \"%s\"", RelationGetRelationName(rel));
		RestoreIdentity(&owner);

		/* copy out: the per-account statements replace SPI_tuptable */
		naccounts = SPI_processed;
		accounts = palloc(sizeof(int64) * Max(naccounts, 1));
		deltas = palloc(sizeof(int64) * Max(naccounts, 1));
		largest = palloc(sizeof(int64) * Max(naccounts, 1));
		smallest = palloc(sizeof(int64) * Max(naccounts, 1));
		no_largest = palloc(sizeof(bool) * Max(naccounts, 1));
		for (i = 0; i < naccounts; i++)
		{
			bool		isnull;

			accounts[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
			deltas[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
			largest[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3,
													 &no_largest[i]));
			smallest[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4,
													  &isnull));
			if (entry->counting.policy == POLICY_SCALE && !isnull && smallest[i] < 0)
				RefuseNegativeValue(rel, accounts[i], feature, smallest[i]);
		}

		for (i = 0; i < naccounts; i++)
		{
			if (entry->counting.policy == POLICY_CAP)
			{
				if (!no_largest[i])
					CheckCap(rel, accounts[i], feature, largest[i]);
			}
			else
				MoveUsage(rel, 0, accounts[i], feature, deltas[i], entry->counting.policy == POLICY_DETACH,
						  entry->metered, SubscriptionMeterNow());
		}
	}

	SPI_finish();
	RestoreIdentity(&extension);
	return PointerGetDatum(NULL);
}

/*
 * The count of a limited table's rows per account, as the recount reads
 * it: (account, units, smallest value), from source (the table, or on a
 * Citus node one of its shards) with more conditions also (or NULL).
 */
static char *
CountSql(const LimitCounting *c, Relation source, const char *also)
{
	return psprintf("SELECT c.account, sum(c.d)::bigint, min(c.v) FROM (%s) AS c GROUP BY 1",
					CountedRowsSql(c,
								   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(source)),
															  RelationGetRelationName(source)),
								   also));
}

/*
 * On Citus, the recount of a distributed table counts each shard on its
 * node, as the table's owner there (shard_usage), called from here over
 * the connections of the current user, the extension's owner: the
 * counters' writes and a caller's DDL that follow (enforce_limit's
 * triggers) then use the connections that read the shard groups, which
 * Citus requires in one transaction.  Reading the shards over connections
 * as the owner would open a second connection to each shard group (and
 * the owner's row security, forced on the shards, would hide its rows).
 * One call per shard group: on the root account of the smallest tenant
 * of each shard of account (a tenant's accounts share its shard; a shard
 * without an account holds no row that could have a counter).  Leaves
 * the rows in SPI_tuptable, as the count on a single server does.
 */
static void
CountShardsOnNodes(Relation rel, const char *feature, bool one_account, int64 account)
{
	StringInfoData tenants;
	uint64		i;

	if (one_account)
	{
		char	   *tenant;

		/* the shard group of the account's own row, found by its tenant */
		if (SPI_execute(psprintf("SELECT subscription.tenant_of('account', " INT64_FORMAT ")", account),
						true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not look up the tenant of account " INT64_FORMAT, account);
		tenant = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (SPI_execute(psprintf("SELECT c.account_id, c.used, c.smallest FROM subscription.account AS a,"
								 " LATERAL subscription.shard_usage(a.tableoid::pg_catalog.regclass,"
								 "                                  %s::pg_catalog.regclass, %s, a.id) AS c"
								 " WHERE a.tenant_id OPERATOR(pg_catalog.=) %s::pg_catalog.int8"
								 "   AND a.id OPERATOR(pg_catalog.=) " INT64_FORMAT,
								 quote_literal_cstr(quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
																			   RelationGetRelationName(rel))),
								 quote_literal_cstr(feature), tenant != NULL ? tenant : "NULL", account),
						false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not count the rows of \"%s\" on the node of its shard", RelationGetRelationName(rel));
		return;
	}
	if (SPI_execute("SELECT pg_catalog.min(a.tenant_id) FROM subscription.account AS a"
					" GROUP BY a.tableoid::pg_catalog.regclass::pg_catalog.text", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shards of subscription.account");
	initStringInfo(&tenants);
	appendStringInfoChar(&tenants, '{');
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		tenant = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		appendStringInfo(&tenants, "%s" INT64_FORMAT, i > 0 ? "," : "", tenant);
	}
	appendStringInfoChar(&tenants, '}');
	/* not read-only: it must see what this transaction trimmed already */
	if (SPI_execute(psprintf("SELECT c.account_id, c.used, c.smallest FROM subscription.account AS a,"
							 " LATERAL subscription.shard_usage(a.tableoid::pg_catalog.regclass,"
							 "                                  %s::pg_catalog.regclass, %s, NULL) AS c"
							 " WHERE a.tenant_id OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.int8[])"
							 "   AND a.id OPERATOR(pg_catalog.=) a.tenant_id",
							 quote_literal_cstr(quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
																		   RelationGetRelationName(rel))),
							 quote_literal_cstr(feature), quote_literal_cstr(tenants.data)),
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not count the rows of \"%s\" on the nodes of its shards", RelationGetRelationName(rel));
}

/*
 * Make the usage counters of a registered (relation, feature) exact: count
 * the table's rows (of one account, or of all) as the table's owner, and
 * write the counters that differ as the extension's owner.  enforce_limit()
 * counts a table this way when it registers it, and apply_downgrade() an
 * account before it trims, so that a counter that drifted while the guards
 * were off (a restore with session_replication_role = replica) never makes
 * it fail.  Returns how many counters changed.
 *
 * With a drift tuplestore, nothing is written: the counters that differ
 * from the rows go into it as (account_id, counted, stored), the same
 * count compared the same way (subscription.verify, through usage_drift).
 */
static int64 CountAndWriteUsage(Oid relid, const char *feature, bool one_account, int64 account,
								Tuplestorestate *drift, TupleDesc drift_desc);

int64
RecountUsage(Oid relid, const char *feature, bool one_account, int64 account,
			 Tuplestorestate *drift, TupleDesc drift_desc)
{
	int			nest;
	int64		changed;

	if (!(LimitsVersioned() && CountersOnCitus()))
		return CountAndWriteUsage(relid, feature, one_account, account, drift, drift_desc);

	/*
	 * On Citus, the count reads every shard of the table: over one
	 * connection per worker, so that the counters' writes and limit_of()'s
	 * reads of the colocated shards that follow, and a DDL of the caller's
	 * (enforce_limit's triggers), may use the connection that read them
	 * (Citus refuses a placement read or written over several connections
	 * in one transaction).  For this call only.
	 */
	nest = NewGUCNestLevel();
	(void) set_config_option("citus.max_adaptive_executor_pool_size", "1", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	changed = CountAndWriteUsage(relid, feature, one_account, account, drift, drift_desc);
	AtEOXact_GUC(true, nest);
	return changed;
}

static int64
CountAndWriteUsage(Oid relid, const char *feature, bool one_account, int64 account,
				   Tuplestorestate *drift, TupleDesc drift_desc)
{
	static SPIPlanPtr write_counters_plan[2];
	int			v = LimitsVersioned();
	static SPIPlanPtr zero_counters_plan = NULL;
	static SPIPlanPtr drift_plan = NULL;
	Oid			argtypes[4] = {OIDOID, TEXTOID, INT8ARRAYOID, INT8ARRAYOID};
	Datum		values[4];
	Relation	rel;
	LimitCounting counting;
	char	   *sql;
	ArrayBuildState *accounts;
	ArrayBuildState *used;
	IdentitySwitch owner;
	int64		changed;
	uint64		i;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL || !ReadLimitCounting(rel, feature, false, &counting, NULL, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("feature \"%s\" is not enforced on table \"%s\"", feature, get_rel_name(relid))));
	if (counting.policy == POLICY_CAP)
	{
		relation_close(rel, NoLock);
		SPI_finish();
		return 0;				/* cap counts nothing, and keeps no use */
	}
	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(feature);
	if (CountersOnCitus() && CitusTable(relid))
		CountShardsOnNodes(rel, feature, one_account, account);
	else
	{
		sql = CountSql(&counting, rel,
					   one_account ? psprintf("r.%s = " INT64_FORMAT, counting.account_column, account) : NULL);
		BecomeTableOwner(rel, &owner);
		/* not read-only: it must see what this transaction trimmed already */
		if (SPI_execute(sql, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not count the rows of \"%s\"", RelationGetRelationName(rel));
		RestoreIdentity(&owner);
	}

	accounts = initArrayResult(INT8OID, CurrentMemoryContext, false);
	used = initArrayResult(INT8OID, CurrentMemoryContext, false);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		bool		no_smallest;
		int64		smallest;

		accumArrayResult(accounts, SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull),
						 false, INT8OID, CurrentMemoryContext);
		accumArrayResult(used, SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull),
						 isnull, INT8OID, CurrentMemoryContext);
		smallest = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &no_smallest));
		if (!no_smallest && smallest < 0)
			RefuseNegativeValue(rel, DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
																 SPI_tuptable->tupdesc, 1, &isnull)),
								feature, smallest);
	}
	if (one_account && SPI_processed == 0)
	{
		accumArrayResult(accounts, Int64GetDatum(account), false, INT8OID, CurrentMemoryContext);
		accumArrayResult(used, Int64GetDatum(0), false, INT8OID, CurrentMemoryContext);
	}
	relation_close(rel, NoLock);

	/* as the extension's owner: the counters, from the numbers alone */
	values[2] = makeArrayResult(accounts, CurrentMemoryContext);
	values[3] = makeArrayResult(used, CurrentMemoryContext);
	if (drift != NULL)
	{
		/* verify: the counters that the write below would change */
		KeptPlan(&drift_plan,
				 "SELECT c.account, coalesce(c.used, 0), coalesce(u.used, 0)"
				 "  FROM unnest($3, $4) AS c(account, used)"
				 "  LEFT JOIN subscription.usage_counter AS u ON u.account_id = c.account AND u.feature = $2"
				 " WHERE coalesce(u.used, 0) <> coalesce(c.used, 0)"
				 " UNION ALL"
				 " SELECT u.account_id, 0, u.used FROM subscription.usage_counter AS u"
				 "  WHERE u.feature = $2 AND u.used <> 0 AND u.account_id <> ALL ($3)"
				 "    AND $1 <> 0"
				 " ORDER BY 1",
				 4, argtypes);
		/* $1: 0 for one account, whose zero counter is in $3 already */
		values[0] = ObjectIdGetDatum(one_account ? InvalidOid : relid);
		if (SPI_execute_plan(drift_plan, values, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not compare the usage counters");
		for (i = 0; i < SPI_processed; i++)
		{
			Datum		row[3];
			bool		nulls[3] = {false, false, false};
			int			c;

			for (c = 0; c < 3; c++)
				row[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
			tuplestore_putvalues(drift, drift_desc, row, nulls);
		}
		changed = SPI_processed;
		SPI_finish();
		return changed;
	}
	/* $1: 0 for one account, whose zero use needs no new counter (a missing one is 0) */
	values[0] = ObjectIdGetDatum(one_account ? InvalidOid : relid);
#define WRITE_COUNTERS_SQL(COLUMN, VALUE, FROM, SET) \
	"INSERT INTO subscription.usage_counter AS u (account_id, feature, used, limit_value" COLUMN ")" \
	" SELECT c.account, $2, coalesce(c.used, 0), subscription.limit_of(c.account, $2)" VALUE \
	"   FROM unnest($3, $4) AS c(account, used)" FROM \
	"  WHERE $1 <> 0 OR coalesce(c.used, 0) <> 0" \
	"     OR EXISTS (SELECT FROM subscription.usage_counter AS e" \
	"                 WHERE e.account_id = c.account AND e.feature = $2)" \
	" ON CONFLICT ON CONSTRAINT usage_counter_pkey DO UPDATE" \
	"    SET used = excluded.used, limit_value = excluded.limit_value" SET \
	"  WHERE (u.used, u.limit_value) IS DISTINCT FROM (excluded.used, excluded.limit_value)"
	if (v && CountersOnCitus())
		changed = WriteCitusCounters(values, DatumGetObjectId(values[0]) != InvalidOid);
	else
	{
		KeptPlan(&write_counters_plan[v],
				 v ? WRITE_COUNTERS_SQL(", limit_version", ", v.version",
										", subscription.limit_catalog_version() AS v (version)",
										", limit_version = excluded.limit_version")
				 : WRITE_COUNTERS_SQL("", "", "", ""),
				 4, argtypes);
		if (SPI_execute_plan(write_counters_plan[v], values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write the usage counters");
		changed = SPI_processed;
	}
	if (!one_account)
	{
		/* accounts whose last row went while nobody counted */
		KeptPlan(&zero_counters_plan,
				 "UPDATE subscription.usage_counter AS u SET used = 0"
				 " WHERE u.feature = $2 AND u.used <> 0 AND u.account_id <> ALL ($3)",
				 3, argtypes);
		if (SPI_execute_plan(zero_counters_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not write the usage counters");
		changed += SPI_processed;
	}
	SPI_finish();
	return changed;
}

/*
 * recount_usage(relation regclass, feature text, account_id bigint) returns bigint
 */
Datum
recount_usage(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of recount_usage() must not be null",
						PG_ARGISNULL(0) ? "relation" : "feature")));
	/* an unknown account: P0002 as everywhere, not the counter's foreign key */
	if (!PG_ARGISNULL(2))
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		values[1] = {PG_GETARG_DATUM(2)};

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args("SELECT subscription.require_account($1)",
								  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up account " INT64_FORMAT, PG_GETARG_INT64(2));
		SPI_finish();
	}
	PG_RETURN_INT64(RecountUsage(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
								 !PG_ARGISNULL(2), PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2),
								 NULL, NULL));
}

/*
 * usage_drift(relation regclass, feature text, account_id bigint)
 *   returns table (account_id bigint, counted bigint, stored bigint)
 *
 * The counters recount_usage() would change, without changing them: the
 * same count, as the table's owner (subscription.verify).
 */
Datum
usage_drift(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of usage_drift() must not be null",
						PG_ARGISNULL(0) ? "relation" : "feature")));
#if PG_VERSION_NUM >= 160000
	InitMaterializedSRF(fcinfo, 0);
#else
	SetSingleFuncCall(fcinfo, 0);
#endif
	RecountUsage(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
				 !PG_ARGISNULL(2), PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2),
				 rsinfo->setResult, rsinfo->setDesc);
	return (Datum) 0;
}

/*
 * shard_usage(account_shard regclass, relation regclass, feature text, account bigint)
 *   returns table (account_id bigint, used bigint, smallest bigint)
 *
 * On a Citus node: the recount's count of the shard of a limited table
 * colocated with account_shard (a shard of subscription.account on this
 * node), of one account or (account NULL) of all, read here as the
 * table's owner (the shard's), row security not forced on it, as a single
 * server's recount reads the table (CountShardsOnNodes calls it once per
 * shard group, or on the account's).
 */
Datum
shard_usage(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			account_shard;
	Oid			relid;
	char	   *feature;
	Relation	rel;
	Relation	shard_rel;
	LimitCounting counting;
	IdentitySwitch owner;
	Oid			shard;
	bool		registered;
	int			nest;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of shard_usage() must not be null",
						PG_ARGISNULL(0) ? "account_shard" : PG_ARGISNULL(1) ? "relation" : "feature")));
	account_shard = PG_GETARG_OID(0);
	relid = PG_GETARG_OID(1);
	feature = text_to_cstring(PG_GETARG_TEXT_PP(2));
#if PG_VERSION_NUM >= 160000
	InitMaterializedSRF(fcinfo, 0);
#else
	SetSingleFuncCall(fcinfo, 0);
#endif
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	shard = NodeShardOf(account_shard, relid);
	rel = try_relation_open(relid, AccessShareLock);

	/*
	 * The registration is read from limited_table, a reference table whose
	 * placement is on this node, which Citus reads here only if told to: a
	 * query inside a shard's query may not be distributed (nothing here
	 * is, the shard below being a plain table to Citus).  For this read
	 * only.
	 */
	nest = NewGUCNestLevel();
	(void) set_config_option("citus.allow_nested_distributed_execution", "on", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	registered = rel != NULL && ReadLimitCounting(rel, feature, false, &counting, NULL, NULL);
	AtEOXact_GUC(true, nest);
	if (!registered)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("feature \"%s\" is not enforced on table \"%s\"", feature, get_rel_name(relid))));
	shard_rel = relation_open(shard, AccessShareLock);
	if (counting.policy != POLICY_CAP)
	{
		char	   *sql = CountSql(&counting, shard_rel,
									   PG_ARGISNULL(3) ? NULL
									   : psprintf("r.%s = " INT64_FORMAT, counting.account_column, PG_GETARG_INT64(3)));

		BecomeTableOwner(shard_rel, &owner);
		/* not read-only: it must see what this transaction trimmed already */
		if (SPI_execute(sql, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not count the rows of \"%s\"", RelationGetRelationName(shard_rel));
		RestoreIdentity(&owner);
		SPIRowsToResult(rsinfo);
	}
	relation_close(shard_rel, NoLock);
	relation_close(rel, NoLock);
	SPI_finish();
	return (Datum) 0;
}
