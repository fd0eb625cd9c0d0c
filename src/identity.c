/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  Who runs what: tenant rows are read and written as their table's
 *	  owner, the extension's own tables as the extension's owner, and an
 *	  empty subscription.actor is trusted only for back-office roles.
 *
 * A tenant's table can carry code of its owner: casts and operators of its
 * types, triggers, defaults, row security policies.  Whatever the
 * extension evaluates over such rows runs as that owner, under
 * SECURITY_RESTRICTED_OPERATION, as VACUUM and REFRESH MATERIALIZED VIEW
 * run index expressions: the owner's code gets its owner's rights and no
 * way to keep them (no SET ROLE, no temporary objects, no session
 * changes).  The extension's tables are then written as their owner by
 * fixed statements whose values were computed beforehand, so no tenant
 * code ever runs with more rights than its owner's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(calling_role);
PG_FUNCTION_INFO_V1(require_trusted_caller);
PG_FUNCTION_INFO_V1(caller_is_trusted);
PG_FUNCTION_INFO_V1(actor_named);
PG_FUNCTION_INFO_V1(trusted_without_actor);
PG_FUNCTION_INFO_V1(restoring_role);

/*
 * The owner of the extension's tables: the role that created the
 * extension, read as the owner of subscription.usage_counter.  Cached, and
 * read again after that table's relcache entry is invalidated (ALTER TABLE
 * ... OWNER TO, REASSIGN OWNED): the callback only marks it.
 */
static Oid	extension_owner = InvalidOid;
static Oid	owner_relid = InvalidOid;

static void
ExtensionOwnerCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == owner_relid)
		extension_owner = InvalidOid;
}

Oid
ExtensionOwner(void)
{
	static bool callback_registered = false;

	if (!callback_registered)
	{
		RegisterRelcacheCallback(RELCACHE_EXTENSION_OWNER, ExtensionOwnerCallback);
		callback_registered = true;
	}
	if (!OidIsValid(extension_owner))
	{
		Oid			relid = get_relname_relid("usage_counter", get_namespace_oid("subscription", false));
		HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));

		if (!HeapTupleIsValid(tuple))
			elog(ERROR, "cache lookup failed for relation %u", relid);
		owner_relid = relid;
		extension_owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
		ReleaseSysCache(tuple);
	}
	return extension_owner;
}

#define SAFE_SEARCH_PATH "pg_catalog, pg_temp"

static void
SwitchTo(Oid role, int flags, IdentitySwitch *s)
{
	GetUserIdAndSecContext(&s->save_userid, &s->save_sec_context);
	SetUserIdAndSecContext(role, s->save_sec_context | SECURITY_LOCAL_USERID_CHANGE | flags);

	/*
	 * A GUC level of our own, rolled back by RestoreIdentity as VACUUM does:
	 * nothing the owner's code sets outlives the switch.  Operators and
	 * casts resolve through search_path, so it is pinned (the
	 * CVE-2023-2454 pattern), unless a caller of ours has pinned it.
	 */
	s->nest_level = NewGUCNestLevel();
	if (namespace_search_path == NULL || strcmp(namespace_search_path, SAFE_SEARCH_PATH) != 0)
		(void) set_config_option("search_path", SAFE_SEARCH_PATH,
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Run as the owner of a tenant's table, restricted, until RestoreIdentity.
 * Row security is not forced on the owner: the extension must see every
 * row of the account, as ri_triggers.c does.
 */
void
BecomeTableOwner(Relation rel, IdentitySwitch *s)
{
	SwitchTo(RelationGetForm(rel)->relowner,
			 SECURITY_RESTRICTED_OPERATION | SECURITY_NOFORCE_RLS, s);
}

/*
 * Run as the extension's owner, for fixed statements on its own tables.
 *
 * What those statements store as text (history's details, events'
 * payloads) renders intervals and timestamps in the extension's styles,
 * not the session's: a payload must read the same whichever session, or
 * Citus worker connection, wrote it.  The defaults cost nothing to keep.
 */
void
BecomeExtensionOwner(IdentitySwitch *s)
{
	SwitchTo(ExtensionOwner(), SECURITY_NOFORCE_RLS, s);
	if (IntervalStyle != INTSTYLE_POSTGRES)
		(void) set_config_option("intervalstyle", "postgres",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (DateStyle != USE_ISO_DATES)
		(void) set_config_option("datestyle", "ISO",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
}

void
RestoreIdentity(IdentitySwitch *s)
{
	AtEOXact_GUC(false, s->nest_level);
	SetUserIdAndSecContext(s->save_userid, s->save_sec_context);
}

/*
 * The role that called us: current_user as the caller saw it, before the
 * extension's SECURITY DEFINER functions changed it.
 */
static Oid
CallingRole(void)
{
	return GetOuterUserId();
}

/*
 * Is the caller back-office code, trusted without an actor?  Superusers,
 * the extension's owner and the roles given grant_backoffice() (or members
 * of them) are; nobody is while the extension runs a tenant's code
 * (SECURITY_RESTRICTED_OPERATION), whoever started the work.  The answer
 * is kept for the transaction and role while no invalidation arrives that
 * could change it (issue 21, S15): a role's membership or attributes
 * (pg_auth_members, pg_authid) or any relation's (revoke_backoffice and
 * grant_backoffice REVOKE and GRANT on the extension's tables as they
 * change granted_role), whether this transaction made the change or
 * another committed it; a back-office right taken back is refused at the
 * next call, not at the next transaction.  The callbacks only count.
 */
static uint64 trust_invalidations = 0;

static void
TrustSyscacheCallback(Datum arg, int cacheid, uint32 hashvalue)
{
	trust_invalidations++;
}

static void RegisterIdentityCallbacks(void);

bool
CallerIsTrusted(void)
{
	static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
	static Oid	cached_role = InvalidOid;
	static bool cached_trust = false;
	static uint64 cached_invalidations = 0;
	Oid			role = CallingRole();
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1];
	bool		isnull;
	uint64		invalidations;

	if (InSecurityRestrictedOperation())
		return false;
	RegisterIdentityCallbacks();
	AcceptInvalidationMessages();
	if (cached_lxid == MyLocalTransactionId() && cached_role == role
		&& cached_invalidations == trust_invalidations)
		return cached_trust;

	invalidations = trust_invalidations;

	if (superuser_arg(role) || role == ExtensionOwner())
		cached_trust = true;
	else
	{
		static SPIPlanPtr trust_plan = NULL;
		IdentitySwitch s;

		values[0] = ObjectIdGetDatum(role);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		BecomeExtensionOwner(&s);
		KeptPlan(&trust_plan,
				 "SELECT EXISTS (SELECT FROM subscription.granted_role AS g"
				 "                WHERE g.kind = 'backoffice' AND pg_has_role($1, g.role, 'USAGE'))",
				 1, argtypes);
		if (SPI_execute_plan(trust_plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read the back-office roles");
		cached_trust = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		RestoreIdentity(&s);
		SPI_finish();
	}
	/* kept unless an invalidation came while it was read */
	cached_lxid = invalidations == trust_invalidations ? MyLocalTransactionId() : InvalidLocalTransactionId;
	cached_role = role;
	cached_invalidations = invalidations;
	return cached_trust;
}

/*
 * Is the calling role, as itself, one given grant_restore()?  A restore by
 * a role that is not a superuser runs the extension's triggers; those that
 * derive rows the dump also holds skip the rows this role copies in
 * (subscription.restored_copy, docs/design.md#restores).  Not a member of
 * such a role (a superuser is a member of every role), and never inside a
 * security-restricted operation.
 *
 * Asked by every guarded write, so the answer is kept per role until
 * subscription.granted_role's relcache entry is invalidated: grant_restore()
 * and revoke_restore() GRANT and REVOKE on that very table, which sends the
 * invalidation to every backend at commit.  The callback only marks.
 */
static bool restoring_valid = false;
static Oid	restoring_role_cached = InvalidOid;
static bool restoring_answer = false;
static Oid	granted_role_relid = InvalidOid;
static uint64 restoring_invalidations = 0;

static void
RestoringRoleCallback(Datum arg, Oid relid)
{
	/* CallerIsTrusted: any relation's (see there) */
	trust_invalidations++;
	if (relid == InvalidOid || relid == granted_role_relid)
	{
		restoring_valid = false;
		restoring_invalidations++;
	}
}

/* the relcache callback of RestoringRole and CallerIsTrusted, and the latter's syscache ones, once */
static void
RegisterIdentityCallbacks(void)
{
	static bool callbacks_registered = false;

	if (callbacks_registered)
		return;
	RegisterRelcacheCallback(RELCACHE_RESTORING_ROLE, RestoringRoleCallback);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, TrustSyscacheCallback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, TrustSyscacheCallback, (Datum) 0);
	callbacks_registered = true;
}

bool
RestoringRole(void)
{
	static SPIPlanPtr restore_plan = NULL;
	Oid			role = CallingRole();
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1];
	bool		isnull;
	bool		answer;
	uint64		invalidations;
	IdentitySwitch s;

	if (InSecurityRestrictedOperation())
		return false;
	RegisterIdentityCallbacks();
	if (restoring_valid && restoring_role_cached == role)
		return restoring_answer;

	granted_role_relid = get_relname_relid("granted_role", get_namespace_oid("subscription", false));
	/* version 1.0 of the SQL, before its update, has no such table */
	if (!OidIsValid(granted_role_relid))
		return false;
	invalidations = restoring_invalidations;
	values[0] = ObjectIdGetDatum(role);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BecomeExtensionOwner(&s);
	KeptPlan(&restore_plan,
			 "SELECT EXISTS (SELECT FROM subscription.granted_role AS g"
			 "                WHERE g.kind = 'restore' AND g.role::oid = $1)",
			 1, argtypes);
	if (SPI_execute_plan(restore_plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the restoring roles");
	answer = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	RestoreIdentity(&s);
	SPI_finish();
	/* kept unless an invalidation came while it was read */
	restoring_answer = answer;
	restoring_role_cached = role;
	restoring_valid = invalidations == restoring_invalidations;
	return answer;
}

/*
 * restoring_role() returns boolean
 */
Datum
restoring_role(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(RestoringRole());
}

/* Does subscription.actor name an actor?  Empty or unset, it does not. */
bool
ActorNamed(void)
{
	return subscription_actor != NULL && subscription_actor[0] != '\0';
}

/*
 * The one statement of "an empty actor is trusted", for back-office code
 * only: true when no actor is named and the caller is trusted, 42501 when
 * none is named and the caller is not, false when an actor is named, whose
 * rights the caller then checks (authorize, Authorize in licenses.c).
 */
bool
TrustedWithoutActor(void)
{
	if (ActorNamed())
		return false;
	RequireTrustedCaller();
	return true;
}

/*
 * The one refusal of an untrusted caller without an actor (Z1, R9, K8: the
 * application names who acts; the database role bounds what it may do).
 */
void
RequireTrustedCaller(void)
{
	if (ActorNamed())
		return;
	if (CallerIsTrusted())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" must name an actor",
					GetUserNameFromId(CallingRole(), false)),
			 errdetail(InSecurityRestrictedOperation() ?
					   "An empty subscription.actor is not trusted inside a security-restricted operation." :
					   "An empty subscription.actor is trusted only for back-office roles."),
			 errhint("Set subscription.actor to the id of the member who acts, or use a role given subscription.grant_backoffice().")));
}

/*
 * calling_role() returns text: the role written to history
 */
Datum
calling_role(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(GetUserNameFromId(CallingRole(), false)));
}

/*
 * caller_is_trusted() returns boolean
 */
Datum
caller_is_trusted(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CallerIsTrusted());
}

/*
 * actor_named() returns boolean: whether subscription.actor names an actor
 */
Datum
actor_named(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ActorNamed());
}

/*
 * trusted_without_actor() returns boolean: see TrustedWithoutActor()
 */
Datum
trusted_without_actor(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(TrustedWithoutActor());
}

/*
 * require_trusted_caller() returns void: 42501 unless an actor is named or
 * the caller is back-office code
 */
Datum
require_trusted_caller(PG_FUNCTION_ARGS)
{
	RequireTrustedCaller();
	PG_RETURN_VOID();
}
