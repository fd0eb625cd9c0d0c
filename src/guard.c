/*-------------------------------------------------------------------------
 *
 * guard.c
 *	  What the extension's statement-level guards share: kept SPI plans, a
 *	  pinned search_path, the classification of the firing event, and the
 *	  one row of a single-row statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "subscription.h"

/*
 * The extension's relcache callbacks, behind one registration: a backend
 * has a fixed number of slots (MAX_RELCACHE_CALLBACKS, 10), which core
 * PostgreSQL and Citus (5) share with us, and a backend that runs out of
 * them is terminated (FATAL "out of relcache_callback_list slots"), as
 * issue 17's cluster showed with four callbacks of ours.  Ours are a slot
 * each (RelcacheSlot, subscription.h), their number fixed when compiling;
 * the one registration is made when the library is loaded (_PG_init).
 */
static RelcacheCallbackFunction relcache_callbacks[RELCACHE_SLOTS];

static void
SubscriptionRelcacheCallback(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < RELCACHE_SLOTS; i++)
		if (relcache_callbacks[i] != NULL)
			relcache_callbacks[i] (arg, relid);
}

/* from _PG_init: the extension's one relcache callback */
void
InstallRelcacheCallbacks(void)
{
	CacheRegisterRelcacheCallback(SubscriptionRelcacheCallback, (Datum) 0);
}

/* Call func, a cache's callback, on every relcache invalidation */
void
RegisterRelcacheCallback(RelcacheSlot slot, RelcacheCallbackFunction func)
{
	if ((int) slot < 0 || (int) slot >= (int) RELCACHE_SLOTS
		|| (relcache_callbacks[slot] != NULL && relcache_callbacks[slot] != func))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("relcache callback slot %d of the subscription extension is taken", (int) slot)));
	relcache_callbacks[slot] = func;
}

/*
 * The plan in *slot, prepared and kept for the life of the backend on
 * first use.
 */
SPIPlanPtr
KeptPlan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	return KeptPlanWithOptions(slot, sql, nargs, argtypes, 0);
}

/*
 * KeptPlan with cursor options: CURSOR_OPT_GENERIC_PLAN plans once, its
 * parameters never folded as constants (an IMMUTABLE check of them is not
 * evaluated at planning, before the checks to its left).
 */
SPIPlanPtr
KeptPlanWithOptions(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	return *slot;
}

/*
 * The crosscheck snapshot of a guard's counter writes, decided as
 * ri_PerformCheck decides it.  The guards read and write their counters
 * with the latest snapshot, so that they see every committed change and
 * never sell a unit twice.  Under READ COMMITTED that is all.  Under
 * REPEATABLE READ and SERIALIZABLE the transaction's snapshot is the
 * crosscheck: a counter row that a transaction committed since ours began
 * has changed is not visible to it, and writing it is a serialization
 * failure (40001, a retry), as an UPDATE of that row would be.
 */
Snapshot
GuardCrosscheckSnapshot(void)
{
	return IsolationUsesXactSnapshot() ? GetTransactionSnapshot() : InvalidSnapshot;
}

#define SAFE_SEARCH_PATH "pg_catalog, pg_temp"

/*
 * Our queries name everything with its schema, but operators and casts
 * still resolve through search_path: pin it while we run (the CVE-2023-2454
 * pattern).  Returns the GUC nest level to give to UnpinSearchPath, or -1
 * when a caller of ours has pinned it already.
 */
int
PinSearchPath(void)
{
	int			nest_level;

	if (namespace_search_path != NULL && strcmp(namespace_search_path, SAFE_SEARCH_PATH) == 0)
		return -1;
	nest_level = NewGUCNestLevel();
	(void) set_config_option("search_path", SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest_level;
}

void
UnpinSearchPath(int nest_level)
{
	if (nest_level >= 0)
		AtEOXact_GUC(true, nest_level);
}

/*
 * Check that a guard was fired AFTER ... FOR EACH STATEMENT, and say by
 * what.  *rows is the transition table the statement wrote (NULL for
 * TRUNCATE); an INSERT, UPDATE or DELETE without one is refused.
 */
GuardedEvent
ClassifyGuardedStatement(FunctionCallInfo fcinfo, const char *guard, Tuplestorestate **rows)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	GuardedEvent event;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() must be called as a trigger", guard)));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) || !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() must be fired AFTER ... FOR EACH STATEMENT", guard)));

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		event = GUARDED_INSERT;
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		event = GUARDED_UPDATE;
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		event = GUARDED_DELETE;
	else
	{
		*rows = NULL;
		return GUARDED_TRUNCATE;
	}

	*rows = event == GUARDED_DELETE ? trigdata->tg_oldtable : trigdata->tg_newtable;
	if (*rows == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() needs the transition tables new_rows and old_rows", guard)));
	return event;
}

/*
 * A trigger of the extension's own bookkeeping, which writes as the
 * extension's owner (record_history, history_event), fires on tables of the
 * extension's owner alone: its own tables and, on Citus, their shards
 * (whose names are not the tables').  Whoever may execute the function
 * could otherwise name it in a trigger of a table of their own (a temp
 * table with the same columns) and have its rows written as the owner's:
 * history, events of any tenant (review h-rev3).  A table of the owner's
 * is one whose rows the owner could write itself.
 */
void
RequireOwnTableTrigger(FunctionCallInfo fcinfo, const char *guard)
{
	Relation	rel = ((TriggerData *) fcinfo->context)->tg_relation;

	if (rel->rd_rel->relowner != ExtensionOwner())
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() must be fired by a table of the extension's owner", guard),
				 errdetail("Table \"%s\" is owned by another role.", RelationGetRelationName(rel)),
				 errtable(rel)));
}

/*
 * The one row of a single-row transition table, in a slot the caller drops.
 * It reads through a read pointer of its own: the table is shared with its
 * other readers.
 */
TupleTableSlot *
OnlyTransitionRow(Tuplestorestate *rows, TupleDesc tupdesc)
{
	TupleTableSlot *slot = MakeSingleTupleTableSlot(tupdesc, &TTSOpsMinimalTuple);
	int			readptr = tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND);

	tuplestore_select_read_pointer(rows, readptr);
	tuplestore_rescan(rows);
	if (!tuplestore_gettupleslot(rows, true, false, slot))
		elog(ERROR, "transition table of one row is empty");
	return slot;
}
