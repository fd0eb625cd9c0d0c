/*-------------------------------------------------------------------------
 *
 * rowwrite.c
 *	  Reading and writing single rows of the extension's own tables with
 *	  the executor's row-level helpers, without planning or starting a
 *	  query: what logical replication's apply does for each change.
 *
 * A one-row license change costs a few index lookups and row writes; as
 * one SQL statement it cost more to start than to run.  The rows written
 * here go through the same steps as the executor's: the column defaults,
 * BEFORE and AFTER row triggers, stored generated columns, NOT NULL and
 * CHECK constraints, the partition constraint of a partition, every index;
 * InsertRowUnlessConflict does what INSERT ... ON CONFLICT DO NOTHING does
 * with those.  The rows that one RowWrites inserts into a table are one
 * statement for its AFTER INSERT statement triggers: they fire once, at
 * EndRowWrites, with those rows as their transition table (the outbox's
 * history_event, issue 20), when at least one row was inserted.  They write the extension's own tables, plain tables (no
 * partition routing), as their owner with row security not forced (the
 * guards switch to it, as ri_triggers.c does): no policy applies, as to a
 * plain INSERT of the owner's.  Rows are read with the latest snapshot, as
 * ri_triggers.c does; under REPEATABLE READ and SERIALIZABLE a locked row
 * that the transaction's snapshot does not see as it is (changed by a
 * transaction committed since, or while we waited) is a serialization
 * failure, as for an UPDATE (GuardCrosscheckSnapshot).
 *
 * On Citus a distributed or reference table in the schema is a shell whose
 * rows live in its shards: its reads and writes here go through fixed
 * statements that Citus routes (routed.c), with the same defaults filled
 * in by FillDefaults; locking and serialization are then Citus's.  On a
 * single server no table is routed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_index.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_relation.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "subscription.h"

/* the compiled CHECK constraints that ExecConstraints() uses, renamed in 18 */
#if PG_VERSION_NUM >= 180000
#define RRI_CHECK_EXPRS(rri) ((rri)->ri_CheckConstraintExprs)
#else
#define RRI_CHECK_EXPRS(rri) ((rri)->ri_ConstraintExprs)
#endif

static Oid KeyIndex(Relation rel);

/*
 * Open the tables, each locked as an INSERT, UPDATE or DELETE locks its
 * target, with their indexes, in one executor state whose snapshot is the
 * latest.
 */
RowWrites *
BeginRowWrites(int ntables, const Oid *relids)
{
	RowWrites  *w = palloc0(sizeof(RowWrites));
	List	   *range_table = NIL;
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;
#endif
	int			i;

	/* see what this statement has written so far, as SPI would */
	CommandCounterIncrement();

	w->estate = CreateExecutorState();
	for (i = 0; i < ntables; i++)
	{
		RangeTblEntry *rte = makeNode(RangeTblEntry);

		rte->rtekind = RTE_RELATION;
		rte->relid = relids[i];
		rte->relkind = RELKIND_RELATION;
		rte->rellockmode = RowExclusiveLock;
#if PG_VERSION_NUM >= 160000
		/* the permissions live apart from the range table from 16 on */
		addRTEPermissionInfo(&perminfos, rte);
#endif
		range_table = lappend(range_table, rte);
	}
#if PG_VERSION_NUM >= 180000
	/* every table is one the writes may touch: none is pruned */
	ExecInitRangeTable(w->estate, range_table, perminfos,
					   bms_add_range(NULL, 1, ntables));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(w->estate, range_table, perminfos);
#else
	ExecInitRangeTable(w->estate, range_table);
#endif
	w->estate->es_snapshot = RegisterSnapshot(GetLatestSnapshot());
	w->estate->es_output_cid = GetCurrentCommandId(true);

	w->ntables = ntables;
	w->tables = palloc0(sizeof(ResultRelInfo) * ntables);
	w->routed = palloc0(sizeof(RoutedTable *) * ntables);
	w->captures = palloc0(sizeof(TransitionCaptureState *) * ntables);
	w->inserted = palloc0(sizeof(bool) * ntables);
	w->defaults = palloc0(sizeof(ExprState **) * ntables);
	w->spare = palloc0(sizeof(TupleTableSlot *) * ntables);
	for (i = 0; i < ntables; i++)
	{
		Relation	rel = table_open(relids[i], RowExclusiveLock);

		/* no routing here: the extension's own tables are plain */
		if (rel->rd_rel->relkind != RELKIND_RELATION)
			elog(ERROR, "\"%s\" is not a plain table", RelationGetRelationName(rel));
		InitResultRelInfo(&w->tables[i], rel, i + 1, NULL, 0);
		ExecOpenIndices(&w->tables[i], false);
		/* on Citus: its rows are in its shards, reached by statements */
		w->routed[i] = RoutedTableOf(rel);
	}
#if PG_VERSION_NUM >= 160000
	EvalPlanQualInit(&w->epqstate, w->estate, NULL, NIL, -1, NIL);
#else
	EvalPlanQualInit(&w->epqstate, w->estate, NULL, NIL, -1);
#endif
	AfterTriggerBeginQuery();
	/* the transition tables of the statement triggers, in this query level */
	for (i = 0; i < ntables; i++)
		if (w->routed[i] == NULL && w->tables[i].ri_TrigDesc != NULL)
			w->captures[i] = MakeTransitionCaptureState(w->tables[i].ri_TrigDesc, relids[i], CMD_INSERT);
	return w;
}

/* fire the AFTER triggers the writes queued, and close everything */
void
EndRowWrites(RowWrites *w)
{
	int			i;

	/* the rows inserted into each table are its statement (see above) */
	for (i = 0; i < w->ntables; i++)
		if (w->inserted[i])
			ExecASInsertTriggers(w->estate, &w->tables[i], w->captures[i]);
	AfterTriggerEndQuery(w->estate);
	EvalPlanQualEnd(&w->epqstate);
	/* the tables that the AFTER triggers opened (a foreign key's check) */
	ExecCloseResultRelations(w->estate);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	for (i = 0; i < w->ntables; i++)
	{
		ExecCloseIndices(&w->tables[i]);
		table_close(w->tables[i].ri_RelationDesc, NoLock);
	}
	UnregisterSnapshot(w->estate->es_snapshot);
	FreeExecutorState(w->estate);
	pfree(w->tables);
	pfree(w->routed);
	pfree(w->captures);
	pfree(w->inserted);
	pfree(w->defaults);
	pfree(w->spare);
	pfree(w);
}

/* the latest snapshot when the writes began: every row is read with it */
Snapshot
RowWriteSnapshot(RowWrites *w)
{
	return w->estate->es_snapshot;
}

Relation
RowWriteRelation(RowWrites *w, int table)
{
	return w->tables[table].ri_RelationDesc;
}

/* a slot of the table's own kind, for its stored rows */
TupleTableSlot *
RowWriteStoredSlot(RowWrites *w, int table)
{
	return table_slot_create(RowWriteRelation(w, table), &w->estate->es_tupleTable);
}

/* an empty slot of the table's row type, for a row to write */
TupleTableSlot *
RowWriteNewSlot(RowWrites *w, int table)
{
	TupleDesc	tupdesc = RelationGetDescr(RowWriteRelation(w, table));
	TupleTableSlot *slot = ExecInitExtraTupleSlot(w->estate, tupdesc, &TTSOpsVirtual);

	memset(slot->tts_isnull, true, sizeof(bool) * tupdesc->natts);
	return slot;
}

/*
 * The table's one spare slot, emptied, for a writer of many rows (a
 * statement's history): InsertRow copies the row it stores, so the slot
 * may be filled again for the next row, without a new slot for each.
 */
TupleTableSlot *
RowWriteSpareSlot(RowWrites *w, int table)
{
	TupleTableSlot *slot = w->spare[table];

	if (slot == NULL)
		return w->spare[table] = RowWriteNewSlot(w, table);
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	return slot;
}

/* one of the extension's tables */
Oid
OwnTable(const char *name)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("subscription", false));

	if (!OidIsValid(relid))
		elog(ERROR, "table subscription.%s does not exist", name);
	return relid;
}

/* set a column of a row to write (a new slot); given[] tells InsertRow() */
void
SetRowColumn(TupleTableSlot *slot, bool *given, Relation rel, const char *column, Datum value)
{
	AttrNumber	attnum = RowWriteColumn(rel, column);

	slot->tts_values[attnum - 1] = value;
	slot->tts_isnull[attnum - 1] = false;
	given[attnum - 1] = true;
}

/* the column's number, or an error naming it */
AttrNumber
RowWriteColumn(Relation rel, const char *column)
{
	AttrNumber	attnum = attnameAttNum(rel, column, false);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "column \"%s\" of relation \"%s\" does not exist",
			 column, RelationGetRelationName(rel));
	return attnum;
}

/*
 * The index that rows of rel are looked up by: its primary key, or, when the
 * primary key starts with the tenant key (docs/design.md#tenant-keys), the
 * index on the rest of the primary key's columns, in the same order: the
 * functions name a row by its id alone.
 */
static Oid
LookUpKeyIndex(Relation rel)
{
	Oid			pkey = PrimaryKeyIndexOf(rel);
	HeapTuple	pktup;
	Form_pg_index pk;
	AttrNumber	tenant_col = get_attnum(RelationGetRelid(rel), "tenant_id");
	Oid			found = InvalidOid;
	ListCell   *lc;

	if (!OidIsValid(pkey))
		elog(ERROR, "relation \"%s\" has no primary key", RelationGetRelationName(rel));
	pktup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pkey));
	if (!HeapTupleIsValid(pktup))
		elog(ERROR, "cache lookup failed for index %u", pkey);
	pk = (Form_pg_index) GETSTRUCT(pktup);
	if (tenant_col == InvalidAttrNumber || pk->indkey.values[0] != tenant_col)
	{
		ReleaseSysCache(pktup);
		return pkey;
	}
	foreach(lc, RelationGetIndexList(rel))
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index ix;
		int			i;

		if (!HeapTupleIsValid(tup))
			continue;
		ix = (Form_pg_index) GETSTRUCT(tup);
		if (ix->indnkeyatts == pk->indnkeyatts - 1 && heap_attisnull(tup, Anum_pg_index_indpred, NULL))
		{
			for (i = 0; i < ix->indnkeyatts; i++)
				if (ix->indkey.values[i] != pk->indkey.values[i + 1])
					break;
			if (i == ix->indnkeyatts)
				found = ix->indexrelid;
		}
		ReleaseSysCache(tup);
		if (OidIsValid(found))
			break;
	}
	ReleaseSysCache(pktup);
	if (!OidIsValid(found))
		elog(ERROR, "relation \"%s\" has no index on its primary key without the tenant key",
			 RelationGetRelationName(rel));
	return found;
}

/*
 * Begin a scan of rel's rows whose first nkeys lookup key columns (those of
 * KeyIndex) equal keys, as snapshot sees them.
 */
KeyScan *
BeginKeyScan(Relation rel, Snapshot snapshot, int nkeys, const Datum *keys)
{
	return BeginTenantKeyScan(rel, snapshot, NULL, nkeys, keys);
}

/*
 * The same, the rows' tenant known (or NULL): a single server looks them up
 * by KeyIndex as above; on Citus the routed lookup names the tenant, so
 * that it runs on the tenant's shard alone (issue 17).
 */
KeyScan *
BeginTenantKeyScan(Relation rel, Snapshot snapshot, const int64 *tenant, int nkeys, const Datum *keys)
{
	KeyScan    *ks = palloc0(sizeof(KeyScan));
	ScanKeyData *skeys;
	Oid			pkey;
	int			i;

	ks->routed = RoutedTableOf(rel);
	if (ks->routed != NULL)
	{
		ks->rel = rel;
		ks->snapshot = snapshot;
		ks->nkeys = nkeys;
		ks->by_tenant = tenant != NULL;
		ks->tenant = tenant != NULL ? *tenant : 0;
		ks->rows = RoutedSelect(rel, ks->routed, snapshot, tenant, nkeys, keys);
		return ks;
	}
	skeys = palloc(sizeof(ScanKeyData) * nkeys);
	pkey = KeyIndex(rel);
	ks->index = index_open(pkey, AccessShareLock);
	if (nkeys > IndexRelationGetNumberOfKeyAttributes(ks->index))
		elog(ERROR, "too many keys for index \"%s\"", RelationGetRelationName(ks->index));
	for (i = 0; i < nkeys; i++)
	{
		Oid			opcintype = ks->index->rd_opcintype[i];
		Oid			eqop = get_opfamily_member(ks->index->rd_opfamily[i], opcintype, opcintype,
											   BTEqualStrategyNumber);

		if (!OidIsValid(eqop))
			elog(ERROR, "missing equality operator for column %d of index \"%s\"",
				 i + 1, RelationGetRelationName(ks->index));
		ScanKeyInit(&skeys[i], i + 1, BTEqualStrategyNumber, get_opcode(eqop), keys[i]);
		skeys[i].sk_collation = ks->index->rd_indcollation[i];
	}
#if PG_VERSION_NUM >= 180000
	ks->scan = index_beginscan(rel, ks->index, snapshot, NULL, nkeys, 0);
#else
	ks->scan = index_beginscan(rel, ks->index, snapshot, nkeys, 0);
#endif
	index_rescan(ks->scan, skeys, nkeys, NULL, 0);
	ks->nkeys = nkeys;
	ks->keys = skeys;
	return ks;
}

/* scan again for other keys, with the same index and snapshot */
void
RescanKeyScan(KeyScan *ks, const Datum *keys)
{
	int			i;

	if (ks->routed != NULL)
	{
		list_free_deep(ks->rows);
		ks->rows = RoutedSelect(ks->rel, ks->routed, ks->snapshot, ks->by_tenant ? &ks->tenant : NULL,
								ks->nkeys, keys);
		ks->next = 0;
		return;
	}
	for (i = 0; i < ks->nkeys; i++)
		ks->keys[i].sk_argument = keys[i];
	index_rescan(ks->scan, ks->keys, ks->nkeys, NULL, 0);
}

/* the next row into slot (a stored slot of the table), or false */
bool
KeyScanNext(KeyScan *ks, TupleTableSlot *slot)
{
	if (ks->routed != NULL)
	{
		if (ks->next >= list_length(ks->rows))
			return false;
		ExecForceStoreHeapTuple((HeapTuple) list_nth(ks->rows, ks->next++), slot, false);
		return true;
	}
	return index_getnext_slot(ks->scan, ForwardScanDirection, slot);
}

void
EndKeyScan(KeyScan *ks)
{
	if (ks->routed != NULL)
	{
		list_free_deep(ks->rows);
		pfree(ks);
		return;
	}
	index_endscan(ks->scan);
	index_close(ks->index, NoLock);
	pfree(ks->keys);
	pfree(ks);
}

/* the one row of rel with this primary key, or false */
bool
FetchRowByKey(Relation rel, Snapshot snapshot, int nkeys, const Datum *keys, TupleTableSlot *slot)
{
	return FetchRowByTenantKey(rel, snapshot, NULL, nkeys, keys, slot);
}

/* the same, the row's tenant known (or NULL): see BeginTenantKeyScan */
bool
FetchRowByTenantKey(Relation rel, Snapshot snapshot, const int64 *tenant, int nkeys, const Datum *keys,
					TupleTableSlot *slot)
{
	KeyScan    *ks = BeginTenantKeyScan(rel, snapshot, tenant, nkeys, keys);
	bool		found = KeyScanNext(ks, slot);

	EndKeyScan(ks);
	return found;
}

pg_noreturn static void SerializationFailure(void);

static void
SerializationFailure(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not serialize access due to concurrent update")));
}

/*
 * Lock the latest version of the row in slot (a stored slot, read by a key
 * scan), waiting for a transaction that is changing it, and load that
 * version into slot.  False when the row is gone.
 */
bool
LockLatestRow(RowWrites *w, int table, TupleTableSlot *slot, LockTupleMode mode)
{
	if (w->routed[table] != NULL)
		return RoutedLock(RowWriteRelation(w, table), w->routed[table], slot, mode);
	return LockLatestVersion(RowWriteRelation(w, table), w->estate->es_snapshot, w->estate->es_output_cid,
							 slot, mode);
}

/*
 * The same for a row of a plain table read with snapshot, locked as
 * command cid: a caller that only locks needs no RowWrites (record_usage's
 * counter, issue 21).
 */
bool
LockLatestVersion(Relation rel, Snapshot snapshot, CommandId cid, TupleTableSlot *slot, LockTupleMode mode)
{
	TM_FailureData tmfd;
	TM_Result	result;

	result = table_tuple_lock(rel, &slot->tts_tid, snapshot, slot, cid, mode, LockWaitBlock,
							  TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
	switch (result)
	{
		case TM_Ok:
			{
				Snapshot	crosscheck = GuardCrosscheckSnapshot();

				/*
				 * a newer version than the transaction's snapshot sees:
				 * what ExecUpdate refuses too
				 */
				if (crosscheck != InvalidSnapshot &&
					(tmfd.traversed ||
					 !table_tuple_satisfies_snapshot(rel, slot, crosscheck)))
					SerializationFailure();
				return true;
			}
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				SerializationFailure();
			return false;
		case TM_SelfModified:
			/* the row was changed by this very command: not a row we write twice */
			elog(ERROR, "row of \"%s\" already changed by this command",
				 RelationGetRelationName(rel));
		default:
			elog(ERROR, "unexpected table_tuple_lock status: %u", result);
	}
	pg_unreachable();
}

/*
 * The column defaults and CHECK constraints of a table, parsed and planned
 * once per backend: an identity column's default alone reads pg_depend, and
 * the executor parses each CHECK again for every statement.  An entry is
 * rebuilt after the table's definition changes; the callback only marks
 * it, as it may run while an expression of the entry is being compiled.
 */
typedef struct TableExprs
{
	Oid			relid;			/* hash key */
	bool		valid;
	MemoryContext context;		/* holds the expressions */
	int			natts;
	Expr	  **defaults;		/* by attribute; NULL without a default */
	int			ncheck;
	Expr	  **checks;			/* in the relation descriptor's order */
	Oid			key_index;		/* LookUpKeyIndex() on first use (a table only
								 * written has none), once per invalidation */
} TableExprs;

static HTAB *table_exprs = NULL;

static void
InvalidateTableExprs(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	TableExprs *entry;

	hash_seq_init(&status, table_exprs);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || entry->relid == relid)
			entry->valid = false;
}

static TableExprs *
GetTableExprs(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	TupleConstr *constr = tupdesc->constr;
	int			ncheck = constr ? constr->num_check : 0;
	TableExprs *entry;
	MemoryContext caller_context;
	bool		found;
	int			i;

	if (table_exprs == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(TableExprs);
		table_exprs = hash_create("subscription table expressions", 8, &ctl,
								  HASH_ELEM | HASH_BLOBS);
		RegisterRelcacheCallback(RELCACHE_TABLE_EXPRS, InvalidateTableExprs);
	}
	entry = hash_search(table_exprs, &relid, HASH_ENTER, &found);
	if (found && entry->valid && entry->natts == tupdesc->natts && entry->ncheck == ncheck)
		return entry;
	if (found && entry->context != NULL)
		MemoryContextDelete(entry->context);
	entry->valid = false;
	entry->context = NULL;

	entry->context = AllocSetContextCreate(CacheMemoryContext, "subscription table expressions",
										   ALLOCSET_SMALL_SIZES);
	caller_context = MemoryContextSwitchTo(entry->context);
	entry->natts = tupdesc->natts;
	entry->defaults = palloc0(sizeof(Expr *) * tupdesc->natts);
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		Node	   *expr;

		if (att->attisdropped || att->attgenerated)
			continue;
		expr = build_column_default(rel, i + 1);
		if (expr != NULL)
			entry->defaults[i] = expression_planner((Expr *) expr);
	}
	entry->key_index = InvalidOid;
	entry->ncheck = ncheck;
	entry->checks = palloc0(sizeof(Expr *) * Max(ncheck, 1));
	for (i = 0; i < ncheck; i++)
	{
		Node	   *check = stringToNode(constr->check[i].ccbin);

#if PG_VERSION_NUM >= 180000
		/* as ExecRelCheck: a NOT ENFORCED check is skipped (NULL) */
		if (!constr->check[i].ccenforced)
			continue;
		check = expand_generated_columns_in_expr(check, rel, 1);
#endif
		entry->checks[i] = expression_planner((Expr *) check);
	}
	MemoryContextSwitchTo(caller_context);
	entry->valid = true;
	return entry;
}

/* the lookup index of rel (LookUpKeyIndex), cached with its expressions */
static Oid
KeyIndex(Relation rel)
{
	TableExprs *entry = GetTableExprs(rel);

	if (!OidIsValid(entry->key_index))
		entry->key_index = LookUpKeyIndex(rel);
	return entry->key_index;
}

/*
 * Compile the table's CHECK constraints for ExecConstraints() from the
 * planned ones, where it would parse and plan each one again.
 */
static void
PrepareChecks(RowWrites *w, int table)
{
	ResultRelInfo *rri = &w->tables[table];
	TableExprs *exprs;
	MemoryContext caller_context;
	int			i;

	if (RRI_CHECK_EXPRS(rri) != NULL)
		return;
	exprs = GetTableExprs(rri->ri_RelationDesc);
	if (exprs->ncheck == 0)
		return;
	caller_context = MemoryContextSwitchTo(w->estate->es_query_cxt);
	RRI_CHECK_EXPRS(rri) = palloc0(sizeof(ExprState *) * exprs->ncheck);
	for (i = 0; i < exprs->ncheck; i++)
		if (exprs->checks[i] != NULL)
			RRI_CHECK_EXPRS(rri)[i] = ExecInitExpr(exprs->checks[i], NULL);
	MemoryContextSwitchTo(caller_context);
}

/*
 * Give the columns of slot that the caller did not set their default, as
 * an INSERT that does not name them would; then materialize the row.  The
 * defaults are compiled once per table of a RowWrites, from a copy of the
 * cached expressions (an invalidation may rebuild those meanwhile), and
 * evaluated in the per-row memory, emptied for each row (the row stored
 * before was materialized, and its insertion is done).
 */
static void
FillDefaults(RowWrites *w, int table, TupleTableSlot *slot, const bool *given)
{
	TableExprs *exprs = GetTableExprs(RowWriteRelation(w, table));
	ExprContext *econtext = GetPerTupleExprContext(w->estate);
	ExprState **defaults = w->defaults[table];
	int			i;

	if (defaults == NULL)
	{
		MemoryContext caller_context = MemoryContextSwitchTo(w->estate->es_query_cxt);

		defaults = palloc0(sizeof(ExprState *) * exprs->natts);
		for (i = 0; i < exprs->natts; i++)
			if (exprs->defaults[i] != NULL)
				defaults[i] = ExecInitExpr(copyObject(exprs->defaults[i]), NULL);
		MemoryContextSwitchTo(caller_context);
		w->defaults[table] = defaults;
	}
	ResetExprContext(econtext);
	for (i = 0; i < exprs->natts; i++)
	{
		if (given[i])
			continue;
		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
		if (defaults[i] != NULL)
			slot->tts_values[i] = ExecEvalExprSwitchContext(defaults[i], econtext, &slot->tts_isnull[i]);
	}
	ExecStoreVirtualTuple(slot);
	ExecMaterializeSlot(slot);
}

/*
 * What ExecSimpleRelationInsert() does, except that the AFTER row triggers
 * also capture the row for the table's statement triggers' transition table.
 */
static void
StoreNewRow(RowWrites *w, int table, TupleTableSlot *slot)
{
	ResultRelInfo *rri = &w->tables[table];
	Relation	rel = rri->ri_RelationDesc;
	List	   *recheck = NIL;

	if (rri->ri_TrigDesc && rri->ri_TrigDesc->trig_insert_before_row &&
		!ExecBRInsertTriggers(w->estate, rri, slot))
		return;
	if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rri, w->estate, slot, CMD_INSERT);
	if (rel->rd_att->constr)
		ExecConstraints(rri, slot, w->estate);
	if (rel->rd_rel->relispartition)
		ExecPartitionCheck(rri, slot, w->estate, true);
	simple_table_tuple_insert(rel, slot);
	if (rri->ri_NumIndices > 0)
#if PG_VERSION_NUM >= 160000
		recheck = ExecInsertIndexTuples(rri, slot, w->estate, false, false, NULL, NIL, false);
#else
		recheck = ExecInsertIndexTuples(rri, slot, w->estate, false, false, NULL, NIL);
#endif
	ExecARInsertTriggers(w->estate, rri, slot, recheck, w->captures[table]);
	w->inserted[table] = true;
	list_free(recheck);
}

/*
 * Insert the row in slot (a new slot; given[i] tells which columns the
 * caller set) as an INSERT would.
 */
void
InsertRow(RowWrites *w, int table, TupleTableSlot *slot, const bool *given)
{
	FillDefaults(w, table, slot, given);
	if (w->routed[table] != NULL)
	{
		RoutedInsert(RowWriteRelation(w, table), w->routed[table], slot, false, InvalidOid);
		return;
	}
	PrepareChecks(w, table);
	StoreNewRow(w, table, slot);
}

/*
 * Insert the row in slot as INSERT ... ON CONFLICT DO NOTHING would, with
 * arbiters (index OIDs) as its arbiter indexes, NIL for every unique index
 * of the table; false when a committed or in-progress row holds an
 * arbiter's key.  A conflict on another unique index is an error, as for
 * the executor's ON CONFLICT (index) DO NOTHING.  A waiter sees a speculative row either
 * confirmed or withdrawn, as for the executor's own insertions.
 */
bool
InsertRowUnlessConflict(RowWrites *w, int table, TupleTableSlot *slot, const bool *given, List *arbiters)
{
	ResultRelInfo *rri = &w->tables[table];
	Relation	rel = rri->ri_RelationDesc;
	TransactionId xid;
	List	   *recheck;

	if (w->routed[table] != NULL)
	{
		/* ON CONFLICT names one arbiter index, or none for any */
		if (list_length(arbiters) > 1)
			elog(ERROR, "a routed insert takes one arbiter index at most");
		FillDefaults(w, table, slot, given);
		return RoutedInsert(rel, w->routed[table], slot, true,
							arbiters != NIL ? linitial_oid(arbiters) : InvalidOid);
	}
	xid = GetCurrentTransactionId();
	/* the arbiters' operators, which a plain insertion does not need */
	for (int i = 0; i < rri->ri_NumIndices; i++)
		if (rri->ri_IndexRelationInfo[i]->ii_Unique &&
			rri->ri_IndexRelationInfo[i]->ii_UniqueOps == NULL)
			BuildSpeculativeIndexInfo(rri->ri_IndexRelationDescs[i], rri->ri_IndexRelationInfo[i]);

	FillDefaults(w, table, slot, given);
	if (rri->ri_TrigDesc && rri->ri_TrigDesc->trig_insert_before_row &&
		!ExecBRInsertTriggers(w->estate, rri, slot))
		return false;
	/* as ExecInsert: generated columns, then the constraints */
	if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rri, w->estate, slot, CMD_INSERT);
	PrepareChecks(w, table);
	if (rel->rd_att->constr)
		ExecConstraints(rri, slot, w->estate);
	if (rel->rd_rel->relispartition)
		ExecPartitionCheck(rri, slot, w->estate, true);

	for (;;)
	{
		ItemPointerData conflict;
		bool		conflicted = false;
		uint32		token;

		CHECK_FOR_INTERRUPTS();
#if PG_VERSION_NUM >= 180000
		if (!ExecCheckIndexConstraints(rri, slot, w->estate, &conflict, NULL, arbiters))
#else
		if (!ExecCheckIndexConstraints(rri, slot, w->estate, &conflict, arbiters))
#endif
		{
			/*
			 * Like DO NOTHING: under REPEATABLE READ the row that holds the
			 * key must be one this transaction could see.
			 */
			if (IsolationUsesXactSnapshot())
			{
				TupleTableSlot *holder = RowWriteStoredSlot(w, table);

				if (!table_tuple_fetch_row_version(rel, &conflict, SnapshotAny, holder))
					elog(ERROR, "failed to fetch conflicting row");
				if (!table_tuple_satisfies_snapshot(rel, holder, w->estate->es_snapshot))
					SerializationFailure();
			}
			return false;
		}

		token = SpeculativeInsertionLockAcquire(xid);
		table_tuple_insert_speculative(rel, slot, w->estate->es_output_cid, 0, NULL, token);
#if PG_VERSION_NUM >= 160000
		recheck = ExecInsertIndexTuples(rri, slot, w->estate, false, true, &conflicted, arbiters, false);
#else
		recheck = ExecInsertIndexTuples(rri, slot, w->estate, false, true, &conflicted, arbiters);
#endif
		table_tuple_complete_speculative(rel, slot, token, !conflicted);
		SpeculativeInsertionLockRelease(xid);
		if (!conflicted)
			break;
		/* someone took the key meanwhile: check again, which now finds it */
		list_free(recheck);
	}
	ExecARInsertTriggers(w->estate, rri, slot, recheck, w->captures[table]);
	w->inserted[table] = true;
	list_free(recheck);
	return true;
}

/*
 * Replace the locked row in oldslot (see LockLatestRow) by newslot, as an
 * UPDATE would.
 */
void
UpdateRow(RowWrites *w, int table, TupleTableSlot *oldslot, TupleTableSlot *newslot)
{
	ExecStoreVirtualTuple(newslot);
	ExecMaterializeSlot(newslot);
	if (w->routed[table] != NULL)
	{
		RoutedUpdate(RowWriteRelation(w, table), w->routed[table], oldslot, newslot);
		return;
	}
	PrepareChecks(w, table);
	ExecSimpleRelationUpdate(&w->tables[table], w->estate, &w->epqstate, oldslot, newslot);
}

/* delete the locked row in slot, as a DELETE would */
void
DeleteRow(RowWrites *w, int table, TupleTableSlot *slot)
{
	if (w->routed[table] != NULL)
	{
		RoutedDelete(RowWriteRelation(w, table), w->routed[table], slot);
		return;
	}
	ExecSimpleRelationDelete(&w->tables[table], w->estate, &w->epqstate, slot);
}
