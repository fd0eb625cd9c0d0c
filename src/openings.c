/*-------------------------------------------------------------------------
 *
 * openings.c
 *	  The invoices whose opening is still to be written (I8, issue 18).
 *
 * An invoice's opening (history invoice_open, the event invoice.opened) is
 * written at the commit of the transaction that wrote it, with all its
 * lines.  That was one deferred constraint trigger event per invoice, each
 * writing one invoice's opening by itself: at the commit of 10,000
 * renewals, 10,000 calls of the trigger and of the history writer, as
 * long as the renewals themselves.  Now the trigger's WHEN clause,
 * opening_pending(), evaluated as each invoice is inserted, adds the
 * invoice to this backend's list for its transaction and queues an event
 * only for the first invoice of the list: that one event, at the commit
 * (or at the end of the statement with SET CONSTRAINTS ... IMMEDIATE),
 * takes the whole list (pending_openings()) and writes every opening in
 * a few statements (announce_invoices), in the order the invoices were
 * inserted, as the events of each invoice fired before.
 *
 * The list lives in TopTransactionContext and is forgotten with it (a
 * reset callback).  Each entry keeps the transaction id of the
 * (sub)transaction that inserted it: a rolled back subtransaction's
 * invoices are gone, and so is the event it queued (the trigger's events
 * of an aborted subtransaction are discarded), so an entry counts only
 * while TransactionIdIsCurrentTransactionId() holds for its inserter;
 * the list's event is live while its inserter's is.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/memutils.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(opening_pending);
PG_FUNCTION_INFO_V1(pending_openings);

typedef struct PendingOpening
{
	int64		tenant_id;
	int64		invoice_id;
	TransactionId inserter;		/* the (sub)transaction that inserted it */
} PendingOpening;

typedef struct PendingOpenings
{
	PendingOpening *items;
	int			count;
	int			size;
	TransactionId queued_by;	/* the inserter of the entry whose event is queued */
	MemoryContextCallback reset;
} PendingOpenings;

/* this transaction's list, NULL when it has none */
static PendingOpenings *pending = NULL;

/* TopTransactionContext is reset: the transaction ended */
static void
ForgetPendingOpenings(void *arg)
{
	pending = NULL;
}

/* drop the entries of rolled back subtransactions */
static void
PrunePendingOpenings(void)
{
	int			kept = 0;
	int			i;

	for (i = 0; i < pending->count; i++)
		if (TransactionIdIsCurrentTransactionId(pending->items[i].inserter))
			pending->items[kept++] = pending->items[i];
	pending->count = kept;
}

/*
 * opening_pending(tenant_id bigint, invoice_id bigint) returns boolean
 *
 * The WHEN clause of invoice_record_opened: the invoice joins the list of
 * its transaction's openings to write; true (queue the trigger's event)
 * unless an event queued for an earlier invoice of the list is still to
 * fire, which will write this one too.
 */
Datum
opening_pending(PG_FUNCTION_ARGS)
{
	TransactionId inserter = GetCurrentTransactionId();
	bool		queue;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("an invoice's opening must name its tenant and its invoice")));
	if (pending == NULL)
	{
		pending = MemoryContextAllocZero(TopTransactionContext, sizeof(PendingOpenings));
		pending->size = 64;
		pending->items = MemoryContextAlloc(TopTransactionContext, sizeof(PendingOpening) * pending->size);
		pending->queued_by = InvalidTransactionId;
		pending->reset.func = ForgetPendingOpenings;
		pending->reset.arg = NULL;
		MemoryContextRegisterResetCallback(TopTransactionContext, &pending->reset);
	}
	/* the list's event is gone with its subtransaction: prune, queue anew */
	queue = pending->count == 0 || !TransactionIdIsValid(pending->queued_by)
		|| !TransactionIdIsCurrentTransactionId(pending->queued_by);
	if (queue)
	{
		PrunePendingOpenings();
		pending->queued_by = inserter;
	}
	if (pending->count == pending->size)
	{
		pending->size *= 2;
		pending->items = repalloc(pending->items, sizeof(PendingOpening) * pending->size);
	}
	pending->items[pending->count].tenant_id = PG_GETARG_INT64(0);
	pending->items[pending->count].invoice_id = PG_GETARG_INT64(1);
	pending->items[pending->count].inserter = inserter;
	pending->count++;
	PG_RETURN_BOOL(queue);
}

/*
 * pending_openings(OUT tenant_ids bigint[], OUT invoice_ids bigint[])
 *
 * The invoices of the list, in the order they were inserted (those of
 * rolled back subtransactions left out), and the list emptied: the next
 * invoice queues an event of its own.
 */
Datum
pending_openings(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Datum	   *tenants;
	Datum	   *invoices;
	int			n = 0;
	int			i;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pending_openings() must be called where a record is expected")));
	desc = BlessTupleDesc(desc);
	if (pending != NULL)
	{
		PrunePendingOpenings();
		n = pending->count;
	}
	tenants = palloc(sizeof(Datum) * (n > 0 ? n : 1));
	invoices = palloc(sizeof(Datum) * (n > 0 ? n : 1));
	for (i = 0; i < n; i++)
	{
		tenants[i] = Int64GetDatum(pending->items[i].tenant_id);
		invoices[i] = Int64GetDatum(pending->items[i].invoice_id);
	}
	if (pending != NULL)
	{
		pending->count = 0;
		pending->queued_by = InvalidTransactionId;
	}
	values[0] = PointerGetDatum(construct_array(tenants, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(invoices, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
