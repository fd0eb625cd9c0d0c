/*-------------------------------------------------------------------------
 *
 * subscription.c
 *	  Module entry point: the module magic and the extension's settings.
 *
 * The settings are defined here, once, so that every other file reads
 * them through the variables declared in subscription.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "subscription.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(current_actor);

char	   *subscription_actor = NULL;
int			subscription_notice_days = 30;
static int	subscription_payment_terms = 0;
char	   *subscription_max_backdate = NULL;
char	   *subscription_max_ahead = NULL;
static char *subscription_event_retention = NULL;
int			subscription_notify_events = NOTIFY_EVENTS_ON;
static char *subscription_usage_key_grace = NULL;
static char *subscription_idempotency_key = NULL;
static char *subscription_idempotency_retention = NULL;
int			subscription_max_catchup = 120;
int			subscription_max_quantity = 1000000;
int			subscription_max_amount = 1000000000;

/*
 * subscription.notify_events: on (the default) notifies when a listener
 * awaits (await_events(), events.c), always on every statement that wrote
 * events, off never; the boolean spellings of the setting's first version
 * are kept, hidden.
 */
static const struct config_enum_entry notify_events_options[] = {
	{"off", NOTIFY_EVENTS_OFF, false},
	{"on", NOTIFY_EVENTS_ON, false},
	{"always", NOTIFY_EVENTS_ALWAYS, false},
	{"false", NOTIFY_EVENTS_OFF, true},
	{"true", NOTIFY_EVENTS_ON, true},
	{"no", NOTIFY_EVENTS_OFF, true},
	{"yes", NOTIFY_EVENTS_ON, true},
	{"0", NOTIFY_EVENTS_OFF, true},
	{"1", NOTIFY_EVENTS_ON, true},
	{NULL, 0, false}
};

/*
 * A setting that holds an interval (subscription.max_backdate,
 * subscription.max_ahead) must be a positive interval without months'
 * ambiguity getting in the way: parsed as interval_in does, without
 * raising (a check hook reports, it does not throw).
 */
static bool
check_positive_interval(char **newval, void **extra, GucSource source)
{
	char		workbuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	struct pg_itm_in itm;
	Interval	span;

	if (*newval == NULL ||
		ParseDateTime(*newval, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf) != 0 ||
		(DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, &itm) != 0 &&
		 DecodeISO8601Interval(*newval, &dtype, &itm) != 0) ||
		dtype != DTK_DELTA ||
		itmin2interval(&itm, &span) != 0)
	{
		GUC_check_errdetail("\"%s\" is not an interval.", *newval ? *newval : "");
		return false;
	}
	if (span.month < 0 || span.day < 0 || span.time < 0 ||
		(span.month == 0 && span.day == 0 && span.time == 0))
	{
		GUC_check_errdetail("The interval must be positive.");
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	DefineCustomStringVariable("subscription.actor",
							   "Member id on whose behalf the session acts.",
							   "Empty means trusted back-office code: no permission checks.",
							   &subscription_actor,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("subscription.notice_days",
							"Days before renewal from which a subscription appears in renewal_notice.",
							NULL,
							&subscription_notice_days,
							30, 0, 3660,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("subscription.payment_terms",
							"Days after an invoice's date that it is due (issue 19).",
							NULL,
							&subscription_payment_terms,
							0, 0, 3660,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("subscription.max_backdate",
							   "How far back a time given to subscribe() and the other calls with \"at\" may be.",
							   "A time before subscription.now() minus this interval is refused: a typo such as 0026 for 2026.",
							   &subscription_max_backdate,
							   "5 years",
							   PGC_USERSET,
							   0,
							   check_positive_interval, NULL, NULL);

	DefineCustomStringVariable("subscription.max_ahead",
							   "How far ahead of subscription.now() renew_due() and run_renewals() may renew.",
							   "A later time is refused, so that a mistyped date cannot bill years in advance.",
							   &subscription_max_ahead,
							   "1 year",
							   PGC_USERSET,
							   0,
							   check_positive_interval, NULL, NULL);

	DefineCustomStringVariable("subscription.event_retention",
							   "How long an event is kept once every consumer has acknowledged it.",
							   "prune_events() deletes acknowledged events older than this interval.",
							   &subscription_event_retention,
							   "7 days",
							   PGC_USERSET,
							   0,
							   check_positive_interval, NULL, NULL);

	/*
	 * E1: read where it is used (event_doorbell(), events.c).  A
	 * transaction that notified holds PostgreSQL's notification lock
	 * through its commit's flush, so notifying writers no longer share
	 * flushes: by default a writer notifies only when a listener awaits.
	 */
	DefineCustomEnumVariable("subscription.notify_events",
							 "When a transaction that writes events sends NOTIFY subscription_events on commit.",
							 "on: when a listener awaits (await_events()); always: on every statement that writes events; off: never (relays that poll).",
							 &subscription_notify_events,
							 NOTIFY_EVENTS_ON,
							 notify_events_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	/* Q1-Q5: checked where it is used (idempotent()), loaded or not */
	DefineCustomStringVariable("subscription.idempotency_key",
							   "The idempotency key of the request (SET LOCAL per transaction).",
							   "A mutating function called again under the same key returns its first result and writes nothing.",
							   &subscription_idempotency_key,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("subscription.idempotency_retention",
							   "How long an idempotency key is kept.",
							   "prune_idempotency_keys() deletes the keys older than this interval.",
							   &subscription_idempotency_retention,
							   "24 hours",
							   PGC_USERSET,
							   0,
							   check_positive_interval, NULL, NULL);

	DefineCustomStringVariable("subscription.usage_key_grace",
							   "How long after its period a key of record_usage() is kept.",
							   "A retry with a key kept counts once; the keys of a period are dropped at a later renewal once this interval has passed.",
							   &subscription_usage_key_grace,
							   "7 days",
							   PGC_USERSET,
							   0,
							   check_positive_interval, NULL, NULL);

	DefineCustomIntVariable("subscription.max_catchup",
							"Periods one renewal call catches up per subscription.",
							"Past it the subscription stays due, with a WARNING; the next call goes on.",
							&subscription_max_catchup,
							120, 1, 1000000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("subscription.max_quantity",
							"The largest quantity of a subscription or an add-on purchase.",
							NULL,
							&subscription_max_quantity,
							1000000, 1, PG_INT32_MAX,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("subscription.max_amount",
							"The largest amount of one price or credit, in the major unit of its currency.",
							NULL,
							&subscription_max_amount,
							1000000000, 1, PG_INT32_MAX,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("subscription.allow_clock",
							 "Whether sessions may move the billing clock with subscription.clock.",
							 "For test servers only: set in the server's configuration, never by a session.",
							 &subscription_allow_clock,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("subscription.clock",
							   "The time subscription.now() returns, where subscription.allow_clock is on.",
							   "Empty means the transaction's start.  Set it with SET LOCAL.",
							   &subscription_clock,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("subscription.set_constraints",
							   "The last SET CONSTRAINTS of the transaction, for Citus' workers.",
							   "Set LOCAL by the extension after a SET CONSTRAINTS on Citus, "
							   "which sends it to the workers; applied where it is set LOCAL.",
							   &subscription_set_constraints,
							   "",
							   PGC_USERSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	/*
	 * Set (LOCAL) by apply_downgrade around a trim on Citus only, and sent
	 * to the nodes of the transaction: the guards on the workers' shards
	 * archive what a cascade deletes there (downgrade.c, issue 17)
	 */
	DefineCustomStringVariable("subscription.trimming",
							   "The trim in progress in this transaction, for the guards on Citus' workers.",
							   "Set LOCAL by apply_downgrade(); not meant to be set by hand.",
							   &subscription_trimming,
							   "",
							   PGC_USERSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("subscription");
	InstallSettingPropagation();
	InstallRelcacheCallbacks();
}

/*
 * The actor written to history: subscription.actor, else the session user.
 */
text *
CurrentActor(void)
{
	if (ActorNamed())
		return cstring_to_text(subscription_actor);
	return cstring_to_text(GetUserNameFromId(GetSessionUserId(), false));
}

/*
 * current_actor() returns text
 */
Datum
current_actor(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(CurrentActor());
}
