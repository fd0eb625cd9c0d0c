/*-------------------------------------------------------------------------
 *
 * clock.c
 *	  The billing clock: subscription.now() (issue 20, item 5).
 *
 * Every time the extension takes as "now" (defaults, views, function
 * bodies, the bounds, the meters) comes from here.  Unless the server
 * allows it (subscription.allow_clock, in the server's configuration, off
 * by default), it is the transaction's start, as SQL's now is.  A test server
 * that allows it reads the setting subscription.clock (SET LOCAL per
 * transaction): an application's tests can then run years of billing in
 * seconds.
 *
 * A clock set where the server does not allow it is an error (55000), not
 * ignored: a test that believes it moved time must not silently bill at
 * the real one, and a production session that sets it learns at once that
 * it cannot.  A malformed clock is an error when it is read (22007, or
 * 22008 out of range), since a setting defined by a library that a
 * session loads after its SET cannot refuse the value when it is set.
 *
 * The parse is kept per transaction (the same text, time zone and date
 * order): subscription.now() stands in the meters' hot path.
 *
 * On Citus (issue 17) the triggers and defaults of a transaction's writes
 * run on the workers' shards, in the workers' own sessions: a clock set on
 * the coordinator alone would stamp their rows with the real time.  A SET
 * LOCAL subscription.clock in a transaction block is therefore handed to
 * Citus as a SET LOCAL that it sends to every node of the transaction, as
 * citus.propagate_set_commands = 'local' does, for this statement only
 * (ClockProcessUtility): the other settings of the session keep Citus'
 * rule.  A clock set for the session stays the session's, as Citus leaves
 * such settings (docs/citus.md).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "access/xact.h"
#include "nodes/parsenodes.h"
#include "pgtime.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(subscription_now);
PG_FUNCTION_INFO_V1(subscription_meter_now);

bool		subscription_allow_clock = false;
char	   *subscription_clock = NULL;

/* the last clock read: its text, and what it was read under */
#define CLOCK_CACHE_LEN 128
static char cached_text[CLOCK_CACHE_LEN];
static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
static pg_tz *cached_zone = NULL;
static int	cached_order = -1;
static TimestampTz cached_time;

pg_noreturn static void BadClock(const char *text, int dterr);

static void
BadClock(const char *text, int dterr)
{
	bool		range = (dterr == DTERR_FIELD_OVERFLOW || dterr == DTERR_MD_FIELD_OVERFLOW ||
						 dterr == DTERR_INTERVAL_OVERFLOW || dterr == DTERR_TZDISP_OVERFLOW);

	ereport(ERROR,
			(errcode(range ? ERRCODE_DATETIME_VALUE_OUT_OF_RANGE : ERRCODE_INVALID_DATETIME_FORMAT),
			 errmsg(range ? "subscription.clock is out of range" : "subscription.clock is not a time"),
			 errdetail("subscription.clock is \"%s\"; it takes a finite timestamptz such as '2027-01-01 00:00+00'.",
					   text)));
}

/*
 * The clock's text as a timestamptz, as timestamptz input reads it, but
 * finite and with an error that names the setting.
 */
static TimestampTz
ParseClock(const char *text)
{
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	int			tz;
	int			dterr;
	fsec_t		fsec;
	struct pg_tm tt;
	TimestampTz result;
#if PG_VERSION_NUM >= 160000
	DateTimeErrorExtra extra;
#endif

	dterr = ParseDateTime(text, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf);
	if (dterr == 0)
#if PG_VERSION_NUM >= 160000
		dterr = DecodeDateTime(field, ftype, nf, &dtype, &tt, &fsec, &tz, &extra);
#else
		dterr = DecodeDateTime(field, ftype, nf, &dtype, &tt, &fsec, &tz);
#endif
	if (dterr != 0)
		BadClock(text, dterr);
	if (dtype != DTK_DATE)
		BadClock(text, DTERR_FIELD_OVERFLOW);	/* infinity, epoch: no finite time */
	if (tm2timestamp(&tt, fsec, &tz, &result) != 0 || !IS_VALID_TIMESTAMP(result))
		BadClock(text, DTERR_FIELD_OVERFLOW);
	return result;
}

/*
 * The billing clock: subscription.clock where the server allows it, else
 * the transaction's start.
 */
TimestampTz
SubscriptionNow(void)
{
	const char *text = subscription_clock;

	if (text == NULL || text[0] == '\0')
		return GetCurrentTransactionStartTimestamp();	/* wall time: the clock not moved */
	if (!subscription_allow_clock)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("subscription.clock is set but this server does not allow the clock to be moved"),
				 errdetail("subscription.clock is \"%s\"; subscription.allow_clock is off.", text),
				 errhint("Reset subscription.clock, or turn subscription.allow_clock on in a test server's configuration.")));
	if (cached_lxid == MyLocalTransactionId() && cached_zone == session_timezone &&
		cached_order == DateOrder && strcmp(cached_text, text) == 0)
		return cached_time;
	cached_lxid = InvalidLocalTransactionId;
	cached_time = ParseClock(text);
	if (strlen(text) < CLOCK_CACHE_LEN)
	{
		strcpy(cached_text, text);
		cached_zone = session_timezone;
		cached_order = DateOrder;
		cached_lxid = MyLocalTransactionId();
	}
	return cached_time;
}

/*
 * subscription.now() returns timestamptz: SubscriptionNow()
 */
Datum
subscription_now(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(SubscriptionNow());
}

/*
 * The meters' clock (issue 21): the statement's start, so that a meter sees
 * time pass between the statements of one transaction; the billing clock
 * where a session moved it.
 */
TimestampTz
SubscriptionMeterNow(void)
{
	if (subscription_clock == NULL || subscription_clock[0] == '\0')
		return GetCurrentStatementStartTimestamp();	/* wall time: the meters' real clock (issue 21) */
	return SubscriptionNow();
}

/*
 * meter_now() returns timestamptz: SubscriptionMeterNow()
 */
Datum
subscription_meter_now(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(SubscriptionMeterNow());
}

static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * A utility statement: a SET LOCAL subscription.clock (a value or DEFAULT)
 * in a transaction block where Citus is loaded runs with
 * citus.propagate_set_commands = 'local', set back after it, so that
 * Citus' own hook (called from here) sends it to the transaction's nodes.
 */
static void
ClockProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					ProcessUtilityContext context, ParamListInfo params,
					QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	char	   *propagation = NULL;

	if (IsA(parsetree, VariableSetStmt))
	{
		VariableSetStmt *set = (VariableSetStmt *) parsetree;
		const char *current;

		if (set->is_local && set->name != NULL && pg_strcasecmp(set->name, "subscription.clock") == 0 &&
			(set->kind == VAR_SET_VALUE || set->kind == VAR_SET_DEFAULT) && IsTransactionBlock() &&
			(current = GetConfigOption("citus.propagate_set_commands", true, false)) != NULL &&
			strcmp(current, "local") != 0)
			propagation = pstrdup(current);
	}
	if (propagation != NULL)
	{
		VariableSetStmt *set = (VariableSetStmt *) parsetree;
		PlannedStmt *own = makeNode(PlannedStmt);

		/*
		 * Citus sends the query string it is given to the nodes (now, and to
		 * each node the transaction reaches later): this statement alone,
		 * not the rest of a string of several ("SET LOCAL ...; SELECT
		 * subscription.renew_all(); COMMIT"), which the workers would run
		 * too (review h-rev4).  The value as the setting reads it.
		 */
		memcpy(own, pstmt, sizeof(PlannedStmt));
		own->stmt_location = 0;
		own->stmt_len = 0;
		pstmt = own;
		queryString = set->kind == VAR_SET_DEFAULT ? "SET LOCAL subscription.clock TO DEFAULT"
			: psprintf("SET LOCAL subscription.clock TO %s", quote_literal_cstr(ExtractSetVariableArgs(set)));
		(void) set_config_option("citus.propagate_set_commands", "local", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	}
	if (prev_process_utility != NULL)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	if (propagation != NULL)
		(void) set_config_option("citus.propagate_set_commands", propagation, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/* from _PG_init: the clock's SET LOCAL reaches Citus' workers */
void
InstallClockPropagation(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = ClockProcessUtility;
}
