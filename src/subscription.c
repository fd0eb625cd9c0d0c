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
#include "utils/guc.h"

#include "subscription.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(current_actor);

char	   *subscription_actor = NULL;
int			subscription_notice_days = 30;

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

	MarkGUCPrefixReserved("subscription");
}

/*
 * The actor written to history: subscription.actor, else the session user.
 */
text *
CurrentActor(void)
{
	if (subscription_actor != NULL && subscription_actor[0] != '\0')
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
