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
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/rangetypes.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/xid8.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(event_next_xid);
PG_FUNCTION_INFO_V1(event_doorbell);
PG_FUNCTION_INFO_V1(await_events);
PG_FUNCTION_INFO_V1(insert_events);
PG_FUNCTION_INFO_V1(history_event);
PG_FUNCTION_INFO_V1(history_events);
PG_FUNCTION_INFO_V1(event_time);
PG_FUNCTION_INFO_V1(event_interval);

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
 * The one writer of events (E1-E3, docs/rules.md): the n events of a
 * statement, in the order given, as one statement (rowwrite.c, without an
 * executor statement: an INSERT's start cost more than its rows).  arrays
 * are its columns,
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
 * The caller is the extension's owner, its search_path pinned.
 */
static ArrayType *
InsertEvents(const Datum *arrays, int n)
{
	static const char *const columns[6] = {"tenant_id", "type", "account_id", "subscription_id", "payload", "at"};
	static const Oid types[6] = {INT8OID, TEXTOID, INT8OID, INT8OID, JSONBOID, TIMESTAMPTZOID};
	static SPIPlanPtr worker_plan = NULL;
	Datum	   *values[6];
	bool	   *nulls[6];
	AttrNumber	attnums[6];
	Datum	   *ids;
	Datum		horizon;
	Oid			sequence;
	Oid			relid;
	Oid			upcoming_key;
	RowWrites  *w;
	Relation	event;
	bool	   *given;
	int			written = 0;
	int			i;
	int			c;
	bool		isnull;

	if (n == 0)
		return construct_empty_array(INT8OID);
	/* E3: the transaction's id first (pg_current_xact_id()) */
	(void) GetTopFullTransactionId();
	sequence = OwnTable("event_id_seq");
	ids = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
		ids[i] = Int64GetDatum(nextval_internal(sequence, true));
	/* then next_xid, once every id of the statement was taken */
	horizon = FullTransactionIdGetDatum(ReadNextFullTransactionId());

	/*
	 * The rows, without an executor statement (rowwrite.c): one statement
	 * for the event table's AFTER triggers.  A renewal.upcoming already
	 * written for its period is not written again (ON CONFLICT on its
	 * unique index alone DO NOTHING, as the PL/pgSQL INSERT was); any other
	 * conflict, that event's on the primary key included (an id the
	 * sequence hands out again), is an error, as for a plain INSERT.
	 */
	for (c = 0; c < 6; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			count;

		get_typlenbyvalalign(types[c], &typlen, &typbyval, &typalign);
		deconstruct_array(DatumGetArrayTypeP(arrays[c]), types[c], typlen, typbyval, typalign,
						  &values[c], &nulls[c], &count);
		if (count != n)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the arrays of insert_events() must be of the same length")));
	}
	relid = OwnTable("event");
	w = BeginRowWrites(1, &relid);
	event = RowWriteRelation(w, 0);
	upcoming_key = get_relname_relid("event_renewal_upcoming_key", RelationGetNamespace(event));
	if (!OidIsValid(upcoming_key))
		elog(ERROR, "index \"event_renewal_upcoming_key\" of the event table is missing");
	for (c = 0; c < 6; c++)
		attnums[c] = RowWriteColumn(event, columns[c]);
	given = palloc(sizeof(bool) * RelationGetDescr(event)->natts);
	for (i = 0; i < n; i++)
	{
		TupleTableSlot *row = RowWriteSpareSlot(w, 0);
		bool		upcoming;

		memset(given, false, sizeof(bool) * RelationGetDescr(event)->natts);
		SetRowColumn(row, given, event, "id", ids[i]);
		SetRowColumn(row, given, event, "next_xid", horizon);
		for (c = 0; c < 6; c++)
		{
			row->tts_values[attnums[c] - 1] = values[c][i];
			row->tts_isnull[attnums[c] - 1] = nulls[c][i];
			given[attnums[c] - 1] = true;
		}
		upcoming = !nulls[1][i] && strcmp(TextDatumGetCString(values[1][i]), "renewal.upcoming") == 0;
		if (!upcoming)
			InsertRow(w, 0, row, given);
		else if (!InsertRowUnlessConflict(w, 0, row, given, list_make1_oid(upcoming_key)))
			continue;
		ids[written++] = ids[i];
	}
	EndRowWrites(w);

	/*
	 * A Citus worker commits its part of a distributed transaction with
	 * PREPARE TRANSACTION, which refuses a NOTIFY: there consumers poll.  The
	 * doorbell decides first (by default a listener that awaits is told), as
	 * it costs less than asking whether this is a Citus worker.  One
	 * notification per statement: a listener claims on it, whatever the id.
	 */
	if (written > 0 && DoorbellRings())
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		KeptPlan(&worker_plan, "SELECT subscription.on_citus_worker()", 0, NULL);
		if (SPI_execute_plan(worker_plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not ask whether this is a Citus worker");
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			Async_Notify("subscription_events",
						 DatumGetCString(DirectFunctionCall1(int8out, ids[written - 1])));
		SPI_finish();
	}
	return construct_array(ids, written, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
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
	ids = PointerGetDatum(InsertEvents(arrays, ArrayGetNItems(ARR_NDIM(types), ARR_DIMS(types))));
	PG_RETURN_DATUM(ids);
}

/*
 * The events of a history row (E1): the one mapping of an operation to
 * event types and versioned payloads (docs/integrating.md), read by the
 * history trigger and by history_events() for SQL.  details is the history
 * row's: the row on insert, {"column": {"old", "new"}} on update,
 * {"members": [...]} for licenses.  In C: the PL/pgSQL function it was,
 * with its pinned search_path, and the trigger's query over it cost about
 * a third of license_consume (docs/benchmarks.md).
 */

/* object -> key, as jsonb's -> (NULL: none, or not an object) */
static JsonbValue *
Field(const JsonbValue *object, const char *key)
{
	if (object == NULL || object->type != jbvBinary || !JsonContainerIsObject(object->val.binary.data))
		return NULL;
	return getKeyJsonValueFromContainer(object->val.binary.data, key, strlen(key), NULL);
}

/* a value as jsonb's ->> gives it (NULL: none or JSON null) */
static char *
FieldText(const JsonbValue *v)
{
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvBinary)
		return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	return JsonbToCString(NULL, &JsonbValueToJsonb((JsonbValue *) v)->root, 0);
}

/* whether text is one of the words (NULL: none is) */
static bool
OneOf(const char *text, const char *const *words)
{
	if (text == NULL)
		return false;
	for (; *words != NULL; words++)
		if (strcmp(text, *words) == 0)
			return true;
	return false;
}

/* "key": value, JSON null for none */
static void
PayloadValue(JsonbParseState **state, const char *key, const JsonbValue *value)
{
	JsonbValue	null;

	PushKey(state, key);
	if (value == NULL)
	{
		null.type = jbvNull;
		value = &null;
	}
	pushJsonbValue(state, WJB_VALUE, (JsonbValue *) value);
}

static void
PayloadString(JsonbParseState **state, const char *key, const char *text)
{
	JsonbValue	v;

	if (text == NULL)
	{
		PayloadValue(state, key, NULL);
		return;
	}
	v.type = jbvString;
	v.val.string.val = (char *) text;
	v.val.string.len = strlen(text);
	PayloadValue(state, key, &v);
}

/* a payload's start: {"version": version, ... */
static void
PayloadBegin(JsonbParseState **state, int version)
{
	JsonbValue	v;

	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(version);
	PayloadValue(state, "version", &v);
}

/* A time as a payload shows it: UTC, ISO 8601, with a Z (event_time()) */
static char *
EventTime(TimestampTz t)
{
	Datum		utc = DirectFunctionCall2(timestamptz_zone, CStringGetTextDatum("UTC"), TimestampTzGetDatum(t));

	return psprintf("%sZ", JsonEncodeDateTime(NULL, utc, TIMESTAMPOID, NULL));
}

/* "key": the time text reads as a timestamptz, as event_time() shows it */
static void
PayloadTime(JsonbParseState **state, const char *key, const char *text)
{
	PayloadString(state, key, text == NULL ? NULL
				  : EventTime(DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(text),
																	  ObjectIdGetDatum(InvalidOid),
																	  Int32GetDatum(-1)))));
}

/* "key": the lower or upper bound of the tstzrange text reads as (none: null) */
static void
PayloadBound(JsonbParseState **state, const char *key, const char *text, bool lower)
{
	RangeType  *range;
	TypeCacheEntry *typcache;
	RangeBound	lo;
	RangeBound	hi;
	bool		empty;
	RangeBound *b = lower ? &lo : &hi;

	if (text == NULL)
	{
		PayloadValue(state, key, NULL);
		return;
	}
	range = DatumGetRangeTypeP(OidInputFunctionCall(F_RANGE_IN, (char *) text, TSTZRANGEOID, -1));
	typcache = lookup_type_cache(TSTZRANGEOID, TYPECACHE_RANGE_INFO);
	range_deserialize(typcache, range, &lo, &hi, &empty);
	PayloadString(state, key, empty || b->infinite ? NULL : EventTime(DatumGetTimestampTz(b->val)));
}

/* (text)::integer, NULL for none */
static bool
IntegerOf(const char *text, int32 *value)
{
	if (text == NULL)
		return false;
	*value = DatumGetInt32(DirectFunctionCall1(int4in, CStringGetDatum(text)));
	return true;
}

typedef struct HistoryEvents
{
	List	   *types;			/* char * */
	List	   *payloads;		/* Jsonb * */
} HistoryEvents;

static void
AddEvent(HistoryEvents *events, const char *type, JsonbParseState **state)
{
	events->types = lappend(events->types, (char *) type);
	events->payloads = lappend(events->payloads,
							   JsonbValueToJsonb(pushJsonbValue(state, WJB_END_OBJECT, NULL)));
	*state = NULL;
}

/* whether details has the key, as jsonb's ? */
static bool
HasKey(Jsonb *details, const char *key)
{
	JsonbValue	k;

	if (details == NULL)
		return false;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&details->root, JB_FOBJECT | JB_FARRAY, &k) != NULL;
}

static void
HistoryRowEvents(const char *operation, Jsonb *details, HistoryEvents *events)
{
	static const char *const ended[] = {"cancelled", "expired", NULL};
	static const char *const settled[] = {"paid", "void", "uncollectible", NULL};
	JsonbParseState *st = NULL;
	JsonbValue	root;
	JsonbValue *d = NULL;

	if (operation == NULL)
		return;
	if (details != NULL)
	{
		root.type = jbvBinary;
		root.val.binary.data = &details->root;
		root.val.binary.len = VARSIZE(details) - VARHDRSZ;
		d = &root;
	}
	if (strcmp(operation, "subscription_insert") == 0)
	{
		char	   *period = FieldText(Field(d, "period"));

		PayloadBegin(&st, 1);
		PayloadValue(&st, "plan", Field(d, "plan"));
		PayloadValue(&st, "cycle", Field(d, "cycle"));
		PayloadValue(&st, "quantity", Field(d, "quantity"));
		PayloadValue(&st, "status", Field(d, "status"));
		PayloadValue(&st, "renewal", Field(d, "renewal"));
		PayloadBound(&st, "period_start", period, true);
		PayloadBound(&st, "period_end", period, false);
		AddEvent(events, "subscription.created", &st);
	}
	else if (strcmp(operation, "subscription_update") == 0)
	{
		int32		new_number = 0;
		int32		old_number = 0;
		bool		has_new = IntegerOf(FieldText(Field(Field(d, "period_number"), "new")), &new_number);
		bool		has_old = IntegerOf(FieldText(Field(Field(d, "period_number"), "old")), &old_number);
		char	   *status_new = FieldText(Field(Field(d, "status"), "new"));
		char	   *status_old = FieldText(Field(Field(d, "status"), "old"));

		if (has_new && has_old && new_number > old_number)
		{
			char	   *period = FieldText(Field(Field(d, "period"), "new"));

			PayloadBegin(&st, 1);
			PayloadValue(&st, "period_number", Field(Field(d, "period_number"), "new"));
			PayloadBound(&st, "period_start", period, true);
			PayloadBound(&st, "period_end", period, false);
			AddEvent(events, "subscription.renewed", &st);
		}
		if (HasKey(details, "plan"))
		{
			PayloadBegin(&st, 1);
			PayloadValue(&st, "from", Field(Field(d, "plan"), "old"));
			PayloadValue(&st, "to", Field(Field(d, "plan"), "new"));
			AddEvent(events, "subscription.plan_changed", &st);
		}
		if (HasKey(details, "quantity"))
		{
			PayloadBegin(&st, 1);
			PayloadValue(&st, "from", Field(Field(d, "quantity"), "old"));
			PayloadValue(&st, "to", Field(Field(d, "quantity"), "new"));
			AddEvent(events, "subscription.quantity_changed", &st);
		}
		if (OneOf(status_new, ended))
		{
			PayloadBegin(&st, 1);
			PayloadValue(&st, "previous_status", Field(Field(d, "status"), "old"));
			AddEvent(events, psprintf("subscription.%s", status_new), &st);
		}
		/* past due and its end (issue 19, D1, D5) */
		if (status_new != NULL && strcmp(status_new, "past_due") == 0)
		{
			PayloadBegin(&st, 1);
			PayloadValue(&st, "invoice_id", Field(Field(d, "past_due_invoice_id"), "new"));
			PayloadTime(&st, "since", FieldText(Field(Field(d, "past_due_since"), "new")));
			AddEvent(events, "subscription.past_due", &st);
		}
		if (status_old != NULL && strcmp(status_old, "past_due") == 0)
		{
			PayloadBegin(&st, 1);
			PayloadValue(&st, "status", Field(Field(d, "status"), "new"));
			PayloadValue(&st, "invoice_id", Field(Field(d, "past_due_invoice_id"), "old"));
			AddEvent(events, "subscription.past_due_ended", &st);
		}
	}
	else if (strcmp(operation, "dunning_step") == 0)
	{
		PayloadBegin(&st, 1);
		PayloadValue(&st, "invoice_id", Field(d, "invoice_id"));
		PayloadValue(&st, "step", Field(d, "step"));
		PayloadValue(&st, "steps", Field(d, "steps"));
		PayloadValue(&st, "action", Field(d, "action"));
		PayloadValue(&st, "amount", Field(d, "due"));
		PayloadValue(&st, "currency", Field(d, "currency"));
		PayloadTime(&st, "step_at", FieldText(Field(d, "at")));
		AddEvent(events, "subscription.dunning_step", &st);
	}
	else if (strcmp(operation, "addon_batch_insert") == 0)
	{
		PayloadBegin(&st, 1);
		PayloadValue(&st, "batch_id", Field(d, "id"));
		PayloadValue(&st, "addon", Field(d, "addon"));
		PayloadValue(&st, "quantity", Field(d, "quantity"));
		AddEvent(events, "addon.purchased", &st);
	}
	else if (strcmp(operation, "addon_batch_update") == 0)
	{
		if (OneOf(FieldText(Field(Field(d, "status"), "new")), ended))
		{
			PayloadBegin(&st, 1);
			PayloadValue(&st, "batch_id", Field(d, "batch_id"));
			PayloadValue(&st, "status", Field(Field(d, "status"), "new"));
			AddEvent(events, "addon.ended", &st);
		}
	}
	else if (strcmp(operation, "license_assign") == 0 || strcmp(operation, "license_release") == 0)
	{
		PayloadBegin(&st, 1);
		PayloadValue(&st, "members", Field(d, "members"));
		AddEvent(events, strcmp(operation, "license_assign") == 0 ? "license.assigned" : "license.released", &st);
	}
	/* invoices and payments (issue 19, I3, I6; the payloads docs/integrating.md reserved) */
	else if (strcmp(operation, "invoice_open") == 0)
	{
		/* version 2 (I8): written at the commit, with the invoice's total and lines */
		PayloadBegin(&st, 2);
		PayloadValue(&st, "invoice_id", Field(d, "invoice_id"));
		PayloadValue(&st, "issuer", Field(d, "issuer"));
		PayloadValue(&st, "number", Field(d, "number"));
		PayloadValue(&st, "total", Field(d, "total"));
		PayloadValue(&st, "lines", Field(d, "lines"));
		PayloadValue(&st, "currency", Field(d, "currency"));
		PayloadTime(&st, "due_at", FieldText(Field(d, "due_at")));
		PayloadValue(&st, "corrects_invoice_id", Field(d, "corrects_invoice_id"));
		AddEvent(events, "invoice.opened", &st);
	}
	else if (strcmp(operation, "invoice_status") == 0)
	{
		char	   *status = FieldText(Field(Field(d, "status"), "new"));

		if (OneOf(status, settled))
		{
			PayloadBegin(&st, 1);
			PayloadValue(&st, "invoice_id", Field(d, "invoice_id"));
			PayloadValue(&st, "issuer", Field(d, "issuer"));
			PayloadValue(&st, "number", Field(d, "number"));
			PayloadValue(&st, "amount", Field(d, "total"));
			PayloadValue(&st, "paid", Field(d, "paid"));
			PayloadValue(&st, "currency", Field(d, "currency"));
			PayloadTime(&st, psprintf("%s_at", status), FieldText(Field(d, "at")));
			AddEvent(events, psprintf("invoice.%s", status), &st);
		}
	}
	else if (strcmp(operation, "payment") == 0)
	{
		PayloadBegin(&st, 1);
		PayloadValue(&st, "payment_id", Field(d, "payment_id"));
		PayloadValue(&st, "invoice_id", Field(d, "invoice_id"));
		PayloadValue(&st, "amount", Field(d, "amount"));
		PayloadValue(&st, "currency", Field(d, "currency"));
		PayloadValue(&st, "reference", Field(d, "reference"));
		PayloadValue(&st, "credited", Field(d, "credited"));
		AddEvent(events, "payment.recorded", &st);
	}
	else if (strcmp(operation, "payment_failure") == 0)
	{
		PayloadBegin(&st, 1);
		PayloadValue(&st, "invoice_id", Field(d, "invoice_id"));
		PayloadValue(&st, "amount", Field(d, "due"));
		PayloadValue(&st, "currency", Field(d, "currency"));
		PayloadValue(&st, "attempt", Field(d, "attempt"));
		PayloadValue(&st, "reason", Field(d, "reason"));
		AddEvent(events, "payment.failed", &st);
	}
	/* else an operation without events */
}

/*
 * history_events(operation text, details jsonb) returns table (type text,
 * payload jsonb): the events of a history row (HistoryRowEvents), for SQL.
 */
Datum
history_events(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HistoryEvents events = {NIL, NIL};
	ListCell   *t;
	ListCell   *p;

	InitMaterializedSRF(fcinfo, 0);
	HistoryRowEvents(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)),
					 PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1), &events);
	forboth(t, events.types, p, events.payloads)
	{
		Datum		values[2] = {CStringGetTextDatum(lfirst(t)), JsonbPGetDatum(lfirst(p))};
		bool		nulls[2] = {false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* event_time(t timestamptz) returns text: a time as a payload shows it */
Datum
event_time(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(EventTime(PG_GETARG_TIMESTAMPTZ(0))));
}

/*
 * event_interval(interval) returns text: a duration as a payload shows it,
 * in PostgreSQL's default style ("1 mon") whatever the session's
 * IntervalStyle, which on Citus is the worker connection's where the
 * payload is built.
 */
Datum
event_interval(PG_FUNCTION_ARGS)
{
	Interval   *span = PG_GETARG_INTERVAL_P(0);
	struct pg_itm itm;
	char		text[MAXDATELEN + 1];

#ifdef INTERVAL_NOT_FINITE
	if (INTERVAL_NOT_FINITE(span))
		PG_RETURN_TEXT_P(cstring_to_text(INTERVAL_IS_NOBEGIN(span) ? "-infinity" : "infinity"));
#endif
	interval2itm(*span, &itm);
	EncodeInterval(&itm, INTSTYLE_POSTGRES, text);
	PG_RETURN_TEXT_P(cstring_to_text(text));
}

/* a history row of a statement, with its events */
typedef struct HistoryRow
{
	int64		id;
	Datum		columns[6];		/* tenant, -, account, subscription, -, at */
	bool		nulls[6];
	HistoryEvents events;
} HistoryRow;

static int
HistoryRowCompare(const void *a, const void *b)
{
	int64		x = ((const HistoryRow *) a)->id;
	int64		y = ((const HistoryRow *) b)->id;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * history_event: AFTER INSERT ... FOR EACH STATEMENT trigger of history,
 * its transition table new_rows: the events of a statement's history rows,
 * in its transaction, with one InsertEvents() (E1), in the order of the
 * history rows (their ids), each row's in the order HistoryRowEvents()
 * gives them.  Every history row is written by RecordHistory()
 * (history.c), whose rows of one RowWrites are one statement here
 * (rowwrite.c).  The transition rows are read alone, without a query.  A
 * restore copies the events with the history: none is written again.  The
 * extension's own bookkeeping: it writes as the extension's owner.
 */
Datum
history_event(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"tenant_id", "operation", "account_id", "subscription_id", "details", "at"};
	Tuplestorestate *rows;
	Relation	rel;
	TupleTableSlot *slot;
	AttrNumber	attnums[6];
	AttrNumber	id_attnum;
	HistoryRow *history;
	IdentitySwitch s;
	Datum		arrays[6];
	ArrayBuildState *columns[6];
	Oid			types[6] = {INT8OID, TEXTOID, INT8OID, INT8OID, JSONBOID, TIMESTAMPTZOID};
	int64		nrows;
	int64		r;
	int			n = 0;
	int			i;

	if (ClassifyGuardedStatement(fcinfo, "history_event", &rows) != GUARDED_INSERT)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("history_event() must be fired by an INSERT")));
	RequireOwnTableTrigger(fcinfo, "history_event");
	nrows = tuplestore_tuple_count(rows);
	/* asked before the identity changes (a restore is the caller's) */
	if (nrows == 0 || RestoringRole())
		return PointerGetDatum(NULL);

	rel = ((TriggerData *) fcinfo->context)->tg_relation;
	for (i = 0; i < 6; i++)
		attnums[i] = RowWriteColumn(rel, names[i]);
	id_attnum = RowWriteColumn(rel, "id");
	history = palloc0(sizeof(HistoryRow) * nrows);
	slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsMinimalTuple);
	tuplestore_select_read_pointer(rows, tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND));
	tuplestore_rescan(rows);
	for (r = 0; r < nrows && tuplestore_gettupleslot(rows, true, false, slot); r++)
	{
		HistoryRow *h = &history[r];
		bool		isnull;
		Datum		operation;
		Datum		details;

		h->id = DatumGetInt64(slot_getattr(slot, id_attnum, &isnull));
		for (i = 0; i < 6; i++)
		{
			Form_pg_attribute att = TupleDescAttr(slot->tts_tupleDescriptor, attnums[i] - 1);

			/* copied: the slot's values live until its next row */
			h->columns[i] = slot_getattr(slot, attnums[i], &h->nulls[i]);
			if (!h->nulls[i])
				h->columns[i] = datumCopy(h->columns[i], att->attbyval, att->attlen);
		}
		operation = h->columns[1];
		details = h->columns[4];
		HistoryRowEvents(h->nulls[1] ? NULL : TextDatumGetCString(operation),
						 h->nulls[4] ? NULL : DatumGetJsonbP(details), &h->events);
		n += list_length(h->events.types);
	}
	ExecDropSingleTupleTableSlot(slot);
	nrows = r;
	if (n == 0)
		return PointerGetDatum(NULL);
	qsort(history, nrows, sizeof(HistoryRow), HistoryRowCompare);

	for (i = 0; i < 6; i++)
		columns[i] = initArrayResult(types[i], CurrentMemoryContext, false);
	for (r = 0; r < nrows; r++)
	{
		HistoryRow *h = &history[r];
		ListCell   *t;
		ListCell   *p;

		forboth(t, h->events.types, p, h->events.payloads)
		{
			accumArrayResult(columns[0], h->columns[0], h->nulls[0], INT8OID, CurrentMemoryContext);
			accumArrayResult(columns[1], CStringGetTextDatum(lfirst(t)), false, TEXTOID, CurrentMemoryContext);
			accumArrayResult(columns[2], h->columns[2], h->nulls[2], INT8OID, CurrentMemoryContext);
			accumArrayResult(columns[3], h->columns[3], h->nulls[3], INT8OID, CurrentMemoryContext);
			accumArrayResult(columns[4], JsonbPGetDatum(lfirst(p)), false, JSONBOID, CurrentMemoryContext);
			accumArrayResult(columns[5], h->columns[5], h->nulls[5], TIMESTAMPTZOID, CurrentMemoryContext);
		}
	}
	for (i = 0; i < 6; i++)
		arrays[i] = makeArrayResult(columns[i], CurrentMemoryContext);

	BecomeExtensionOwner(&s);
	(void) InsertEvents(arrays, n);
	RestoreIdentity(&s);
	return PointerGetDatum(NULL);
}
