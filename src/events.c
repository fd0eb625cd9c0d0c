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
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/xid8.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(event_next_xid);
PG_FUNCTION_INFO_V1(event_doorbell);
PG_FUNCTION_INFO_V1(await_events);

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
Datum
event_doorbell(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;

	if (subscription_notify_events == NOTIFY_EVENTS_OFF)
		PG_RETURN_BOOL(false);
	if (subscription_notify_events == NOTIFY_EVENTS_ALWAYS)
		PG_RETURN_BOOL(true);
	doorbell_tag(&tag);
	PG_RETURN_BOOL(LockAcquire(&tag, DOORBELL_WRITER, false, true) == LOCKACQUIRE_NOT_AVAIL);
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
