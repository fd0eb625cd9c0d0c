/*-------------------------------------------------------------------------
 *
 * routed.c
 *	  The one-row reads and writes of rowwrite.c on a Citus distributed or
 *	  reference table, through SPI, so that Citus routes each row.
 *
 * On Citus the extension's table in the schema is a shell: its rows live
 * in its shards.  rowwrite.c's direct writes and index scans would reach
 * the empty shell, so for such a table it runs fixed statements instead,
 * prepared once per table and kept: an INSERT of every column (the
 * defaults are computed by rowwrite.c, as for a direct insert), the same
 * with ON CONFLICT DO NOTHING (on one unique index, or any), an UPDATE of the columns outside the
 * primary key and a DELETE by the primary key, a SELECT by the first
 * columns of the primary key, and one locking the row.  On a single server
 * no table is routed and none of this runs.
 *
 * The entries are cached per relation OID; a relcache invalidation of the
 * relation (Citus sends one when it distributes a table) only marks its
 * entry, which is built again on next use.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "subscription.h"

/* the lock modes of LockTupleMode, each a locking clause */
#define ROUTED_LOCK_MODES (LockTupleExclusive + 1)

struct RoutedTable
{
	Oid			relid;			/* hash key */
	bool		valid;
	bool		routed;			/* a Citus distributed or reference table */
	int			natts;
	int			ncols;			/* the columns written: not dropped, not generated */
	AttrNumber *cols;
	Oid		   *coltypes;
	int			npk;			/* the primary key's columns, in key order */
	AttrNumber *pk;
	int			lookup_first;	/* of pk, the first a lookup names: 1 past a
								 * leading tenant key (rowwrite.c's KeyIndex) */
	char	   *name;			/* schema-qualified, quoted */
	bool		overriding;		/* a GENERATED ALWAYS identity column */
	SPIPlanPtr	insert;
	SPIPlanPtr	insert_unless_conflict;
	Oid			insert_arbiter; /* insert_unless_conflict's arbiter index, or
								 * InvalidOid for any unique index */
	SPIPlanPtr	update;
	SPIPlanPtr	delete;
	SPIPlanPtr	lock[ROUTED_LOCK_MODES];
	SPIPlanPtr	select[INDEX_MAX_KEYS + 1]; /* by the number of key columns */
	SPIPlanPtr	select_tenant[INDEX_MAX_KEYS + 1];	/* the same, naming the tenant */
};

static HTAB *routed_tables = NULL;

static void
RoutedTableCallback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	RoutedTable *entry;

	hash_seq_init(&status, routed_tables);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || entry->relid == relid)
			entry->valid = false;
}

static void
ForgetRoutedTable(RoutedTable *t)
{
	int			i;

	if (t->insert)
		SPI_freeplan(t->insert);
	if (t->insert_unless_conflict)
		SPI_freeplan(t->insert_unless_conflict);
	if (t->update)
		SPI_freeplan(t->update);
	if (t->delete)
		SPI_freeplan(t->delete);
	for (i = 0; i < ROUTED_LOCK_MODES; i++)
		if (t->lock[i])
			SPI_freeplan(t->lock[i]);
	for (i = 0; i <= INDEX_MAX_KEYS; i++)
	{
		if (t->select[i])
			SPI_freeplan(t->select[i]);
		if (t->select_tenant[i])
			SPI_freeplan(t->select_tenant[i]);
	}
	if (t->cols)
		pfree(t->cols);
	if (t->coltypes)
		pfree(t->coltypes);
	if (t->pk)
		pfree(t->pk);
	if (t->name)
		pfree(t->name);
	memset(((char *) t) + offsetof(RoutedTable, valid), 0, sizeof(RoutedTable) - offsetof(RoutedTable, valid));
}

/*
 * The routed statements of rel, or NULL when rel is written directly (no
 * Citus, or not a Citus table).
 */
RoutedTable *
RoutedTableOf(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	RoutedTable *t;
	bool		found;
	MemoryContext old;
	Oid			pkey;
	Relation	index;
	int			i;

	if (!CitusPresent())
		return NULL;
	if (routed_tables == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(RoutedTable);
		routed_tables = hash_create("subscription routed tables", 16, &ctl, HASH_ELEM | HASH_BLOBS);
		RegisterRelcacheCallback(RELCACHE_ROUTED_TABLES, RoutedTableCallback);
	}
	t = hash_search(routed_tables, &relid, HASH_ENTER, &found);
	if (!found)
		memset(((char *) t) + offsetof(RoutedTable, valid), 0, sizeof(RoutedTable) - offsetof(RoutedTable, valid));
	else if (t->valid)
		return t->routed ? t : NULL;
	ForgetRoutedTable(t);

	t->routed = CitusTable(relid);
	if (!t->routed)
	{
		t->valid = true;
		return NULL;
	}
	pkey = PrimaryKeyIndexOf(rel);
	if (!OidIsValid(pkey))
		elog(ERROR, "relation \"%s\" has no primary key", RelationGetRelationName(rel));

	old = MemoryContextSwitchTo(TopMemoryContext);
	t->natts = desc->natts;
	t->cols = palloc(sizeof(AttrNumber) * desc->natts);
	t->coltypes = palloc(sizeof(Oid) * desc->natts);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated)
			continue;
		if (att->attidentity == ATTRIBUTE_IDENTITY_ALWAYS)
			t->overriding = true;
		t->cols[t->ncols] = att->attnum;
		t->coltypes[t->ncols] = att->atttypid;
		t->ncols++;
	}
	index = index_open(pkey, AccessShareLock);
	t->npk = IndexRelationGetNumberOfKeyAttributes(index);
	t->pk = palloc(sizeof(AttrNumber) * t->npk);
	for (i = 0; i < t->npk; i++)
		t->pk[i] = index->rd_index->indkey.values[i];
	index_close(index, AccessShareLock);
	t->lookup_first = (t->npk > 1 && strcmp(get_attname(relid, t->pk[0], false), "tenant_id") == 0) ? 1 : 0;
	t->name = pstrdup(quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												 RelationGetRelationName(rel)));
	MemoryContextSwitchTo(old);
	t->valid = true;
	return t;
}

static const char *
ColumnName(Relation rel, AttrNumber attnum)
{
	return quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname));
}

static int
ColumnPosition(RoutedTable *t, AttrNumber attnum)
{
	int			i;

	for (i = 0; i < t->ncols; i++)
		if (t->cols[i] == attnum)
			return i;
	elog(ERROR, "column %d is not written", attnum);
}

static bool
InPrimaryKey(RoutedTable *t, AttrNumber attnum)
{
	int			i;

	for (i = 0; i < t->npk; i++)
		if (t->pk[i] == attnum)
			return true;
	return false;
}

/* " WHERE pk1 = $first AND pk2 = $first+1 ..." over the first nkeys key columns */
static void
AppendColumnsCondition(StringInfo sql, Relation rel, const AttrNumber *cols, int ncols, int first)
{
	int			i;

	for (i = 0; i < ncols; i++)
		appendStringInfo(sql, "%s %s OPERATOR(pg_catalog.=) $%d", i == 0 ? " WHERE" : " AND",
						 ColumnName(rel, cols[i]), first + i);
}

static void
AppendKeyCondition(StringInfo sql, Relation rel, RoutedTable *t, int nkeys, int first)
{
	AppendColumnsCondition(sql, rel, t->pk, nkeys, first);
}

static SPIPlanPtr
Prepare(SPIPlanPtr *slot, StringInfo sql, int nargs, Oid *argtypes)
{
	return KeptPlan(slot, sql->data, nargs, argtypes);
}

/* the written columns of slot as SPI arguments, from position 0 */
static void
SlotArguments(RoutedTable *t, TupleTableSlot *slot, Datum *values, char *nulls)
{
	int			i;

	slot_getallattrs(slot);
	for (i = 0; i < t->ncols; i++)
	{
		values[i] = slot->tts_values[t->cols[i] - 1];
		nulls[i] = slot->tts_isnull[t->cols[i] - 1] ? 'n' : ' ';
	}
}

/*
 * The conflict target of an INSERT whose only arbiter is the unique index
 * arbiter: its key columns and expressions, and its predicate if partial,
 * as ON CONFLICT's inference names them ("((tenant_id), (subscription_id),
 * ((payload ->> 'renews_at'::text))) WHERE type = 'renewal.upcoming'").
 * Inside SPI.
 */
static void
AppendConflictTarget(StringInfo sql, Oid arbiter)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	bool		isnull;
	char	   *text;

	args[0] = ObjectIdGetDatum(arbiter);
	if (SPI_execute_with_args("SELECT '(' || string_agg('(' || pg_catalog.pg_get_indexdef(i.indexrelid, k, true) || ')', ', ' ORDER BY k)"
							  "       || ')' || coalesce(' WHERE ' || pg_catalog.pg_get_expr(i.indpred, i.indrelid, true), '')"
							  "  FROM pg_catalog.pg_index AS i, pg_catalog.generate_series(1, i.indnkeyatts) AS k"
							  " WHERE i.indexrelid = $1 AND i.indisunique"
							  " GROUP BY i.indexrelid, i.indrelid, i.indpred",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "unique index %u not found", arbiter);
	text = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		elog(ERROR, "unique index %u has no key columns", arbiter);
	appendStringInfo(sql, " %s", text);
}

/*
 * Insert the row in slot (every column set: rowwrite.c filled the
 * defaults); unless_conflict: ON CONFLICT DO NOTHING, false when a row
 * holds its key: on the unique index arbiter alone if valid (a conflict
 * on another, the primary key included, is then an error, as for
 * rowwrite.c's own InsertRowUnlessConflict), else on any.
 */
bool
RoutedInsert(Relation rel, RoutedTable *t, TupleTableSlot *slot, bool unless_conflict, Oid arbiter)
{
	SPIPlanPtr *plan = unless_conflict ? &t->insert_unless_conflict : &t->insert;
	Datum	   *values = palloc(sizeof(Datum) * Max(t->ncols, 1));
	char	   *nulls = palloc(sizeof(char) * Max(t->ncols, 1));
	bool		inserted;
	int			i;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* one kept plan for ON CONFLICT, for the arbiter its callers name */
	if (unless_conflict && *plan != NULL && t->insert_arbiter != arbiter)
	{
		SPI_freeplan(*plan);
		*plan = NULL;
	}
	if (*plan == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s (", t->name);
		for (i = 0; i < t->ncols; i++)
			appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "", ColumnName(rel, t->cols[i]));
		appendStringInfoString(&sql, t->overriding ? ") OVERRIDING SYSTEM VALUE VALUES (" : ") VALUES (");
		for (i = 0; i < t->ncols; i++)
			appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", i + 1);
		appendStringInfoChar(&sql, ')');
		if (unless_conflict)
		{
			appendStringInfoString(&sql, " ON CONFLICT");
			if (OidIsValid(arbiter))
				AppendConflictTarget(&sql, arbiter);
			appendStringInfoString(&sql, " DO NOTHING");
			t->insert_arbiter = arbiter;
		}
		Prepare(plan, &sql, t->ncols, t->coltypes);
	}
	SlotArguments(t, slot, values, nulls);
	if (SPI_execute_plan(*plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into \"%s\"", RelationGetRelationName(rel));
	inserted = SPI_processed == 1;
	SPI_finish();
	return inserted;
}

/*
 * Replace the row of oldslot's primary key by newslot: its columns outside
 * the key (Citus does not move a row between shards by an UPDATE).
 */
void
RoutedUpdate(Relation rel, RoutedTable *t, TupleTableSlot *oldslot, TupleTableSlot *newslot)
{
	Datum	   *values = palloc(sizeof(Datum) * (t->ncols + t->npk));
	char	   *nulls = palloc(sizeof(char) * (t->ncols + t->npk));
	Oid		   *argtypes = palloc(sizeof(Oid) * (t->ncols + t->npk));
	int			i;

	slot_getallattrs(oldslot);
	slot_getallattrs(newslot);
	for (i = 0; i < t->npk; i++)
	{
		AttrNumber	a = t->pk[i];
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), a - 1);

		if (oldslot->tts_isnull[a - 1] != newslot->tts_isnull[a - 1] ||
			(!oldslot->tts_isnull[a - 1] &&
			 !datumIsEqual(oldslot->tts_values[a - 1], newslot->tts_values[a - 1], att->attbyval, att->attlen)))
			elog(ERROR, "a routed update of \"%s\" cannot change its primary key", RelationGetRelationName(rel));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	SlotArguments(t, newslot, values, nulls);
	memcpy(argtypes, t->coltypes, sizeof(Oid) * t->ncols);
	for (i = 0; i < t->npk; i++)
	{
		int			p = ColumnPosition(t, t->pk[i]);

		values[t->ncols + i] = oldslot->tts_values[t->pk[i] - 1];
		nulls[t->ncols + i] = ' ';
		argtypes[t->ncols + i] = t->coltypes[p];
	}
	if (t->update == NULL)
	{
		StringInfoData sql;
		bool		first = true;

		initStringInfo(&sql);
		appendStringInfo(&sql, "UPDATE %s SET", t->name);
		for (i = 0; i < t->ncols; i++)
		{
			if (InPrimaryKey(t, t->cols[i]))
				continue;
			appendStringInfo(&sql, "%s %s = $%d", first ? "" : ",", ColumnName(rel, t->cols[i]), i + 1);
			first = false;
		}
		if (first)
			elog(ERROR, "relation \"%s\" has no column outside its primary key", RelationGetRelationName(rel));
		AppendKeyCondition(&sql, rel, t, t->npk, t->ncols + 1);
		Prepare(&t->update, &sql, t->ncols + t->npk, argtypes);
	}
	if (SPI_execute_plan(t->update, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update \"%s\"", RelationGetRelationName(rel));
	SPI_finish();
}

/* the primary key of slot as SPI arguments */
static void
KeyArguments(RoutedTable *t, TupleTableSlot *slot, Datum *values, Oid *argtypes)
{
	int			i;

	slot_getallattrs(slot);
	for (i = 0; i < t->npk; i++)
	{
		values[i] = slot->tts_values[t->pk[i] - 1];
		argtypes[i] = t->coltypes[ColumnPosition(t, t->pk[i])];
	}
}

/* delete the row of slot's primary key */
void
RoutedDelete(Relation rel, RoutedTable *t, TupleTableSlot *slot)
{
	Datum		values[INDEX_MAX_KEYS];
	Oid			argtypes[INDEX_MAX_KEYS];

	KeyArguments(t, slot, values, argtypes);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (t->delete == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfo(&sql, "DELETE FROM %s", t->name);
		AppendKeyCondition(&sql, rel, t, t->npk, 1);
		Prepare(&t->delete, &sql, t->npk, argtypes);
	}
	if (SPI_execute_plan(t->delete, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from \"%s\"", RelationGetRelationName(rel));
	SPI_finish();
}

/* "SELECT every column FROM the table": the rows rowwrite.c reads */
static void
AppendSelect(StringInfo sql, Relation rel, RoutedTable *t)
{
	int			i;
	TupleDesc	desc = RelationGetDescr(rel);
	bool		first = true;

	appendStringInfoString(sql, "SELECT ");
	for (i = 0; i < desc->natts; i++)
	{
		if (TupleDescAttr(desc, i)->attisdropped)
			continue;
		appendStringInfo(sql, "%s%s", first ? "" : ", ", ColumnName(rel, i + 1));
		first = false;
	}
	appendStringInfo(sql, " FROM %s", t->name);
}

/* SPI's result rows as tuples of rel, in the caller's context */
static List *
ResultRows(Relation rel, MemoryContext context)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *isnull = palloc(sizeof(bool) * desc->natts);
	List	   *rows = NIL;
	uint64		r;
	int			i;

	for (r = 0; r < SPI_processed; r++)
	{
		MemoryContext old;
		int			c = 0;

		for (i = 0; i < desc->natts; i++)
		{
			if (TupleDescAttr(desc, i)->attisdropped)
			{
				values[i] = (Datum) 0;
				isnull[i] = true;
				continue;
			}
			values[i] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, ++c, &isnull[i]);
		}
		old = MemoryContextSwitchTo(context);
		rows = lappend(rows, heap_form_tuple(desc, values, isnull));
		MemoryContextSwitchTo(old);
	}
	return rows;
}

/*
 * The rows whose first nkeys lookup key columns (past a leading tenant key)
 * equal keys, as tuples of rel in the caller's memory context.  With a
 * tenant (not NULL) on a table keyed by it, the statement names it too: on
 * Citus it then runs on the tenant's shard alone, from a trigger on a
 * shard as well (issue 17); without one it reads every shard.
 */
List *
RoutedSelect(Relation rel, RoutedTable *t, Snapshot snapshot, const int64 *tenant, int nkeys, const Datum *keys)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[INDEX_MAX_KEYS + 1];
	Datum		args[INDEX_MAX_KEYS + 1];
	bool		by_tenant = tenant != NULL && t->lookup_first == 1;
	SPIPlanPtr *plan = by_tenant ? &t->select_tenant[nkeys] : &t->select[nkeys];
	List	   *rows;
	int			i;

	if (nkeys > t->npk - t->lookup_first)
		elog(ERROR, "too many keys for the primary key of \"%s\"", RelationGetRelationName(rel));
	for (i = 0; i < nkeys; i++)
	{
		argtypes[i] = t->coltypes[ColumnPosition(t, t->pk[t->lookup_first + i])];
		args[i] = keys[i];
	}
	if (by_tenant)
	{
		argtypes[nkeys] = INT8OID;
		args[nkeys] = Int64GetDatum(*tenant);
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (*plan == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		AppendSelect(&sql, rel, t);
		AppendColumnsCondition(&sql, rel, t->pk + t->lookup_first, nkeys, 1);
		if (by_tenant)
			appendStringInfo(&sql, "%s %s OPERATOR(pg_catalog.=) $%d", nkeys == 0 ? " WHERE" : " AND",
							 ColumnName(rel, t->pk[0]), nkeys + 1);
		Prepare(plan, &sql, nkeys + (by_tenant ? 1 : 0), argtypes);
	}
	if (SPI_execute_snapshot(*plan, args, NULL, snapshot, InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read \"%s\"", RelationGetRelationName(rel));
	rows = ResultRows(rel, caller);
	SPI_finish();
	return rows;
}

/*
 * Lock the row of slot's primary key in mode and load its latest version
 * into slot; false when it is gone.
 */
bool
RoutedLock(Relation rel, RoutedTable *t, TupleTableSlot *slot, LockTupleMode mode)
{
	static const char *const clauses[ROUTED_LOCK_MODES] = {
		[LockTupleKeyShare] = " FOR KEY SHARE",
		[LockTupleShare] = " FOR SHARE",
		[LockTupleNoKeyExclusive] = " FOR NO KEY UPDATE",
		[LockTupleExclusive] = " FOR UPDATE",
	};
	MemoryContext caller = CurrentMemoryContext;
	Datum		values[INDEX_MAX_KEYS];
	Oid			argtypes[INDEX_MAX_KEYS];
	List	   *rows;

	KeyArguments(t, slot, values, argtypes);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (t->lock[mode] == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		AppendSelect(&sql, rel, t);
		AppendKeyCondition(&sql, rel, t, t->npk, 1);
		appendStringInfoString(&sql, clauses[mode]);
		Prepare(&t->lock[mode], &sql, t->npk, argtypes);
	}
	if (SPI_execute_plan(t->lock[mode], values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not lock a row of \"%s\"", RelationGetRelationName(rel));
	rows = ResultRows(rel, caller);
	SPI_finish();
	if (rows == NIL)
		return false;
	ExecForceStoreHeapTuple((HeapTuple) linitial(rows), slot, false);
	return true;
}
