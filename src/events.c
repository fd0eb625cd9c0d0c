/*-------------------------------------------------------------------------
 *
 * events.c
 *	  The transactional outbox's horizon (issue 20, docs/integrating.md).
 *
 * write_event() takes an event's id from its sequence and then reads the
 * next transaction id to be assigned, stored as event.next_xid.  Every
 * transaction that will ever be given an id at or above next_xid takes its
 * event ids after this one (it has no event before it has a transaction
 * id).  So once next_xid <= pg_snapshot_xmin() of a reader's snapshot,
 * every transaction that could still commit an event with a lower id has
 * ended: claim_events() hands out the prefix of ids whose next_xid is below
 * its snapshot's xmin, and its position never skips an event that commits
 * late.  The value must be read now, not from the statement's snapshot.
 *
 * The doorbell: a writer of events sends NOTIFY subscription_events only
 * when a listener awaits one (subscription.notify_events = on, the
 * default), since PostgreSQL serializes the commits of notifying
 * transactions.  The doorbell is an advisory lock of the database (its own
 * key, not one of pg_advisory_lock's): a listener declares itself waiting
 * with await_events(), which takes it in RowExclusiveLock for its session;
 * a writer tries it in ShareLock for its transaction, without waiting
 * (event_doorbell()).  Each mode is compatible with itself and conflicts
 * with the other, so:
 *  - the try fails while a listener holds the doorbell or is queued for
 *    it: the writer notifies;
 *  - it succeeds when no listener is: the writer does not notify, and
 *    holds the doorbell until its transaction ends, so a listener's
 *    await_events() returns only once every writer that found no listener
 *    has committed or rolled back.
 * A listener LISTENs, calls await_events(), claims once more (a snapshot
 * taken after it), and only then sleeps: an event whose writer did not
 * notify committed before that claim, and every later writer notifies
 * until the listener calls await_events(false) on waking.  A session's
 * lock ends with it: a listener that dies leaves no doorbell rung.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/xid8.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(event_next_xid);
PG_FUNCTION_INFO_V1(event_doorbell);
PG_FUNCTION_INFO_V1(await_events);
PG_FUNCTION_INFO_V1(insert_events);
PG_FUNCTION_INFO_V1(history_event);

/* the doorbell's advisory lock: "SUBS", issue 20, a fourth field of its own */
#define DOORBELL_KEY1 0x53554253
#define DOORBELL_KEY2 20
#define DOORBELL_KIND 20
#define DOORBELL_LISTENER RowExclusiveLock
#define DOORBELL_WRITER ShareLock

static void
doorbell_tag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, DOORBELL_KEY1, DOORBELL_KEY2, DOORBELL_KIND);
}

/*
 * Whether this session holds the doorbell as a listener, read from the lock
 * table, not remembered: pg_advisory_unlock_all() (and DISCARD ALL)
 * release every advisory lock of the session, this one too.
 */
static bool
doorbell_held(const LOCKTAG *tag)
{
#if PG_VERSION_NUM >= 170000
	return LockHeldByMe(tag, DOORBELL_LISTENER, false);
#else
	return LockHeldByMe(tag, DOORBELL_LISTENER);
#endif
}

/* event_next_xid() returns xid8: the next transaction id to be assigned */
Datum
event_next_xid(PG_FUNCTION_ARGS)
{
	PG_RETURN_FULLTRANSACTIONID(ReadNextFullTransactionId());
}

/*
 * event_doorbell() returns boolean: whether the writer of events calling
 * it notifies (subscription.notify_events; on: whether a listener awaits,
 * the doorbell tried for the transaction, above).
 */
static bool
DoorbellRings(void)
{
	LOCKTAG		tag;

	if (subscription_notify_events == NOTIFY_EVENTS_OFF)
		return false;
	if (subscription_notify_events == NOTIFY_EVENTS_ALWAYS)
		return true;
	doorbell_tag(&tag);
	return LockAcquire(&tag, DOORBELL_WRITER, false, true) == LOCKACQUIRE_NOT_AVAIL;
}

Datum
event_doorbell(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(DoorbellRings());
}

/*
 * await_events(waiting boolean) returns boolean: true declares the session
 * a listener awaiting NOTIFY subscription_events, once every writer that
 * found none has ended (it waits for them, under lock_timeout); false ends
 * the declaration.  Returns whether the session awaits.
 */
Datum
await_events(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;
	bool		waiting;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"waiting\" of await_events() must not be null")));
	waiting = PG_GETARG_BOOL(0);
	doorbell_tag(&tag);
	if (waiting && !doorbell_held(&tag))
		(void) LockAcquire(&tag, DOORBELL_LISTENER, true, false);
	else if (!waiting && doorbell_held(&tag))
		(void) LockRelease(&tag, DOORBELL_LISTENER, true);
	PG_RETURN_BOOL(waiting);
}

/*
 * A kept plan, planned once (generic) where Citus is not (slots[0]); where
 * it is (slots[1]), as the default plans, for the values of each call while
 * that costs less than a generic plan, which lets Citus route a statement
 * by its values.  The default plans the writer's INSERT (of arrays) again
 * at every call.
 */
static SPIPlanPtr
KeptGenericPlan(SPIPlanPtr *slots, const char *sql, int nargs, Oid *argtypes)
{
	bool		citus = CitusPresent();
	SPIPlanPtr *slot = &slots[citus ? 1 : 0];

	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, citus ? 0 : CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare_cursor failed for \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	return *slot;
}

/* event ids in ascending order */
static int
EventIdCompare(const void *a, const void *b)
{
	int64		x = DatumGetInt64(*(const Datum *) a);
	int64		y = DatumGetInt64(*(const Datum *) b);

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The one writer of events (E1-E3, docs/rules.md): the n events of a
 * statement, in the order given, with one INSERT.  arrays are its columns,
 * one-dimensional arrays of n elements each, as insert_events() takes them:
 * tenant_ids bigint[], types text[], account_ids bigint[],
 * subscription_ids bigint[], payloads jsonb[], ats timestamptz[].
 *   E3: the transaction has its id before it takes an event id, and
 *   next_xid is read once, after every id of the statement was taken: so
 *   for each event, every transaction at or above its next_xid takes its
 *   ids after it;
 *   NOTIFY subscription_events once per statement, with the last id
 *   written, sent on commit, when the doorbell rings (not from a Citus
 *   worker, docs/citus.md).
 * A renewal.upcoming already written for its period is not written again.
 * Returns the ids written, in order.  It trusts its arrays: write_events()
 * checks them first; the history trigger builds them from its own rows.
 * The caller is connected to SPI, as the extension's owner, its
 * search_path pinned.
 */
static ArrayType *
InsertEvents(const Datum *arrays, int n)
{
	static SPIPlanPtr insert_plans[2];
	SPIPlanPtr	insert;
	static SPIPlanPtr worker_plan = NULL;
	Oid			argtypes[8] = {INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID, JSONBARRAYOID,
	TIMESTAMPTZARRAYOID, XID8OID, INT8ARRAYOID};
	Datum		values[8];
	Datum	   *ids;
	Oid			sequence;
	uint64		written;
	uint64		i;
	bool		isnull;

	if (n == 0)
		return construct_empty_array(INT8OID);
	/* E3: the transaction's id first (pg_current_xact_id()) */
	(void) GetTopFullTransactionId();
	sequence = OwnTable("event_id_seq");
	ids = palloc(sizeof(Datum) * n);
	for (i = 0; i < (uint64) n; i++)
		ids[i] = Int64GetDatum(nextval_internal(sequence, true));
	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = arrays[1];
	values[2] = arrays[2];
	values[3] = arrays[3];
	values[4] = arrays[4];
	values[5] = arrays[5];
	/* then next_xid, once every id of the statement was taken */
	values[6] = FullTransactionIdGetDatum(ReadNextFullTransactionId());
	values[7] = arrays[0];
	insert = KeptGenericPlan(insert_plans,
							 "INSERT INTO subscription.event AS e (id, type, account_id, subscription_id, payload, at, next_xid, tenant_id)"
							 " SELECT x.id, x.type, x.account_id, x.subscription_id, x.payload, x.at, $7, x.tenant_id"
							 "   FROM ROWS FROM (unnest($1), unnest($2), unnest($3), unnest($4), unnest($5), unnest($6),"
							 "                   unnest($8)) AS x (id, type, account_id, subscription_id, payload, at, tenant_id)"
							 " ON CONFLICT (tenant_id, subscription_id, (payload ->> 'renews_at')) WHERE type = 'renewal.upcoming'"
							 " DO NOTHING RETURNING e.id",
							 8, argtypes);
	if (SPI_execute_plan(insert, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not write the events");
	/*
	 * The ids written (not a renewal.upcoming already written), in order:
	 * on Citus the rows of several shards come back in no set order.
	 */
	written = SPI_processed;
	for (i = 0; i < written; i++)
		ids[i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
	if (written > 1)
		qsort(ids, written, sizeof(Datum), EventIdCompare);

	/*
	 * A Citus worker commits its part of a distributed transaction with
	 * PREPARE TRANSACTION, which refuses a NOTIFY: there consumers poll.  The
	 * doorbell decides first (by default a listener that awaits is told), as
	 * it costs less than asking whether this is a Citus worker.  One
	 * notification per statement: a listener claims on it, whatever the id.
	 */
	if (written > 0 && DoorbellRings())
	{
		KeptPlan(&worker_plan, "SELECT subscription.on_citus_worker()", 0, NULL);
		if (SPI_execute_plan(worker_plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not ask whether this is a Citus worker");
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			Async_Notify("subscription_events",
						 DatumGetCString(DirectFunctionCall1(int8out, ids[written - 1])));
	}
	return construct_array(ids, (int) written, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/*
 * insert_events(tenant_ids bigint[], types text[], account_ids bigint[],
 *				 subscription_ids bigint[], payloads jsonb[], ats
 *				 timestamptz[]) returns bigint[]
 *
 * InsertEvents() for write_events(), which checked the arrays.  No role
 * is granted it: the extension's owner calls it.
 */
Datum
insert_events(PG_FUNCTION_ARGS)
{
	Datum		arrays[6];
	ArrayType  *types;
	Datum		ids;
	int			i;

	for (i = 0; i < 6; i++)
	{
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("the arrays of insert_events() must not be null")));
		arrays[i] = PG_GETARG_DATUM(i);
	}
	types = PG_GETARG_ARRAYTYPE_P(1);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ids = SPI_datumTransfer(PointerGetDatum(InsertEvents(arrays, ArrayGetNItems(ARR_NDIM(types), ARR_DIMS(types)))),
							false, -1);
	SPI_finish();
	PG_RETURN_DATUM(ids);
}

/*
 * history_event: AFTER INSERT ... FOR EACH STATEMENT trigger of history,
 * its transition table new_rows: the events of a statement's history rows,
 * in its transaction, with one InsertEvents() (E1), in the order of the
 * history rows, each row's in the order history_events() gives them (the
 * one mapping of operations to events, in SQL).  Every history row is
 * written by RecordHistory() (history.c), whose rows of one RowWrites are
 * one statement here (rowwrite.c).  The transition rows are read alone: on
 * a Citus worker no statement joins them with a distributed table.  A
 * restore copies the events with the history: none is written again.  The
 * extension's own bookkeeping: it writes as the extension's owner.
 */
Datum
history_event(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plans[2];
	SPIPlanPtr	plan;
	Tuplestorestate *rows;
	IdentitySwitch s;
	Datum		arrays[6];
	bool		isnull;
	uint64		n;
	int			i;

	if (ClassifyGuardedStatement(fcinfo, "history_event", &rows) != GUARDED_INSERT)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("history_event() must be fired by an INSERT")));
	/* asked before the identity changes (a restore is the caller's) */
	if (tuplestore_tuple_count(rows) == 0 || RestoringRole())
		return PointerGetDatum(NULL);

	BecomeExtensionOwner(&s);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_register_trigger_data((TriggerData *) fcinfo->context) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition tables");
	/*
	 * One query: the rows' own columns (checked by history's constraints)
	 * and the payloads (versioned by history_events()) need
	 * no check.  The columns of the events are gathered here, in their
	 * order: one sort, not one per column.
	 */
	plan = KeptGenericPlan(plans,
					"SELECT h.tenant_id, e.type, h.account_id, h.subscription_id, e.payload, h.at"
					"  FROM new_rows AS h"
					" CROSS JOIN LATERAL subscription.history_events(h.operation, h.details)"
					"       WITH ORDINALITY AS e (type, payload, n)"
					" ORDER BY h.id, e.n",
					0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the events of the history rows");
	n = SPI_processed;
	if (n > 0)
	{
		for (i = 0; i < 6; i++)
		{
			Oid			type = SPI_gettypeid(SPI_tuptable->tupdesc, i + 1);
			ArrayBuildState *column = initArrayResult(type, CurrentMemoryContext, false);
			uint64		row;

			for (row = 0; row < n; row++)
			{
				Datum		value = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, i + 1, &isnull);

				accumArrayResult(column, value, isnull, type, CurrentMemoryContext);
			}
			arrays[i] = makeArrayResult(column, CurrentMemoryContext);
		}
		(void) InsertEvents(arrays, (int) n);
	}
	SPI_finish();
	RestoreIdentity(&s);
	return PointerGetDatum(NULL);
}
