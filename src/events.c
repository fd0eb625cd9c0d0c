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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "fmgr.h"
#include "utils/xid8.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(event_next_xid);

/* event_next_xid() returns xid8: the next transaction id to be assigned */
Datum
event_next_xid(PG_FUNCTION_ARGS)
{
	PG_RETURN_FULLTRANSACTIONID(ReadNextFullTransactionId());
}
