/*-------------------------------------------------------------------------
 *
 * subscription.h
 *	  Declarations shared by the subscription extension's C files.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SUBSCRIPTION_H
#define SUBSCRIPTION_H

/* settings, defined in subscription.c */
extern char *subscription_actor;
extern int	subscription_notice_days;

/* guard.c: what the statement-level guards share */
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "utils/tuplestore.h"

typedef enum GuardedEvent
{
	GUARDED_INSERT,
	GUARDED_UPDATE,
	GUARDED_DELETE,
	GUARDED_TRUNCATE,
	GUARDED_NOTHING				/* a guard that has nothing to check */
} GuardedEvent;

extern SPIPlanPtr KeptPlan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes);
extern int	PinSearchPath(void);
extern void UnpinSearchPath(int nest_level);
extern GuardedEvent ClassifyGuardedStatement(FunctionCallInfo fcinfo, const char *guard,
											 Tuplestorestate **rows);
extern TupleTableSlot *OnlyTransitionRow(Tuplestorestate *rows, TupleDesc tupdesc);

/*
 * downgrade.c: the trimming in progress (0 / InvalidOid when none), so that
 * the limit guards archive the rows the application's own foreign keys
 * delete along with the trimmed ones
 */
extern int64 TrimmingAccount;
extern int64 TrimmingSubscription;
extern Oid	TrimmingRelation;

#endif							/* SUBSCRIPTION_H */
