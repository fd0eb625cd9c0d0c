/*-------------------------------------------------------------------------
 *
 * entitlements.c
 *	  has_feature(): whether an account's plans and add-ons include a
 *	  feature, fast enough for a row-level security policy (issue 21).
 *
 * A policy calls the function once per row it filters.  The answer is
 * stored: subscription.entitlement holds a row per feature an account is
 * granted, kept by refresh_entitlements() in the transaction that changes
 * the account's plans, add-ons or the catalog, by the rule
 * (granted_features: granted_limits, as the limits) in one place.  A call
 * reads it with one probe of the (account_id, feature) index, under the
 * active snapshot.  On Citus, where a catalog change refreshes no stored
 * row, a call computes the rule instead.  Each call site also remembers the answers it read, per
 * account, while they cannot have changed: the same transaction and
 * command, under a snapshot that sees the same transactions ended (a
 * PL/pgSQL expression keeps its call site for the whole transaction,
 * across statements that change the plans).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(has_feature);

/* past this many accounts a call site starts its memory again */
#define MAX_REMEMBERED_ACCOUNTS 65536

typedef struct GrantedEntry
{
	int64		account_id;		/* hash key */
	bool		granted;
} GrantedEntry;

/* one per call site, in its fn_extra */
typedef struct EntitlementCache
{
	text	   *feature;		/* the feature the answers are of */
	HTAB	   *accounts;		/* account id -> GrantedEntry */
	/* what the answers saw: they hold while these are the same */
	LocalTransactionId lxid;
	CommandId	curcid;
	TransactionId xmin;
	TransactionId xmax;
	uint32		xcnt;
	bool		saw_snapshot;
	bool		feature_known;	/* require_feature() passed under these */
	Oid			entitlements;	/* subscription.entitlement */
	int64		last_account;	/* the previous row's answer, looked up first */
	bool		last_granted;
	bool		have_last;
} EntitlementCache;

static SPIPlanPtr require_feature_plan = NULL;

/*
 * 42704 unless a plan limit or an add-on names the feature
 * (require_feature), as the extension's owner: the policy runs as the
 * querying role, which reads none of the extension's tables.  Asked on a
 * refusal only (a feature something grants exists), once per call site
 * and snapshot.
 */
static void
RequireFeature(EntitlementCache *cache)
{
	IdentitySwitch identity;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	SPIPlanPtr	plan;

	if (cache->feature_known)
		return;
	BecomeExtensionOwner(&identity);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = KeptPlan(&require_feature_plan, "SELECT subscription.require_feature($1)", 1, argtypes);
	values[0] = PointerGetDatum(cache->feature);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "subscription.require_feature() failed");
	SPI_finish();
	RestoreIdentity(&identity);
	cache->feature_known = true;
}

static SPIPlanPtr granted_plan = NULL;

/*
 * On Citus: the rule itself (granted_features), as the extension's owner.
 * There a catalog change writes no distributed table (issue 17: no fan-out
 * from a reference table), so the stored rows may predate it; the answer
 * is computed, as before the rows were stored.
 */
static bool
FeatureGrantedNow(EntitlementCache *cache, int64 account_id)
{
	IdentitySwitch identity;
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	SPIPlanPtr	plan;
	bool		isnull;
	bool		granted;

	BecomeExtensionOwner(&identity);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = KeptPlan(&granted_plan,
					"SELECT EXISTS (SELECT FROM subscription.granted_features("
					"subscription.tenant_of('account', $1), $1, $2))", 2, argtypes);
	values[0] = Int64GetDatum(account_id);
	values[1] = PointerGetDatum(cache->feature);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "subscription.granted_features() returned no row");
	granted = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	RestoreIdentity(&identity);
	return !isnull && granted;
}

/*
 * Whether the account holds the feature: on a single server, one probe of
 * the entitlement index by (account_id, feature) under the active
 * snapshot; on Citus, the rule (FeatureGrantedNow).
 */
static bool
FeatureEntitled(EntitlementCache *cache, int64 account_id)
{
	Relation	rel;
	TupleTableSlot *slot;
	Datum		keys[2];
	Snapshot	snapshot = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
	bool		found;

	if (CitusPresent())
		return FeatureGrantedNow(cache, account_id);
	if (!OidIsValid(cache->entitlements))
		cache->entitlements = OwnTable("entitlement");
	rel = table_open(cache->entitlements, AccessShareLock);
	slot = table_slot_create(rel, NULL);
	keys[0] = Int64GetDatum(account_id);
	keys[1] = PointerGetDatum(cache->feature);
	found = FetchRowByKey(rel, snapshot, 2, keys, slot);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, AccessShareLock);
	return found;
}

static void
ResetAccounts(EntitlementCache *cache, MemoryContext mcxt)
{
	HASHCTL		ctl;

	if (cache->accounts != NULL)
		hash_destroy(cache->accounts);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(GrantedEntry);
	ctl.hcxt = mcxt;
	cache->accounts = hash_create("subscription entitlements", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	cache->have_last = false;
	cache->feature_known = false;
}

/*
 * Whether the answers a call site keeps were given under what the current
 * snapshot sees; if not, they are forgotten and the current one noted.  Two
 * snapshots of one transaction and command with the same xmin, xmax and
 * number of running transactions see the same transactions ended: an id
 * below xmax leaves the running set only by ending, and none joins it.
 * Without an active snapshot nothing is kept.
 */
static void
ForgetStaleAnswers(EntitlementCache *cache, MemoryContext mcxt)
{
	Snapshot	snapshot = ActiveSnapshotSet() ? GetActiveSnapshot() : NULL;
	LocalTransactionId lxid = MyLocalTransactionId();

	if (snapshot != NULL && cache->saw_snapshot && cache->lxid == lxid &&
		cache->curcid == snapshot->curcid &&
		TransactionIdEquals(cache->xmin, snapshot->xmin) &&
		TransactionIdEquals(cache->xmax, snapshot->xmax) &&
		cache->xcnt == snapshot->xcnt)
		return;
	ResetAccounts(cache, mcxt);
	cache->saw_snapshot = snapshot != NULL;
	cache->lxid = lxid;
	if (snapshot != NULL)
	{
		cache->curcid = snapshot->curcid;
		cache->xmin = snapshot->xmin;
		cache->xmax = snapshot->xmax;
		cache->xcnt = snapshot->xcnt;
	}
}

/*
 * has_feature(account_id bigint, feature text) RETURNS boolean
 *
 * True when the account's active plans and add-ons grant the feature: a
 * limit above 0, or unlimited (its row in subscription.entitlement).  A frozen account keeps its features (a
 * freeze stops growth, not reading).  An unknown account has none; an
 * unknown feature is an error (42704), so that a misspelt policy fails
 * instead of hiding every row.
 */
Datum
has_feature(PG_FUNCTION_ARGS)
{
	int64		account_id = PG_GETARG_INT64(0);
	text	   *feature = PG_GETARG_TEXT_PP(1);
	EntitlementCache *cache = (EntitlementCache *) fcinfo->flinfo->fn_extra;
	MemoryContext mcxt = fcinfo->flinfo->fn_mcxt;
	GrantedEntry *entry;
	bool		found;
	bool		granted;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(mcxt, sizeof(EntitlementCache));
		fcinfo->flinfo->fn_extra = cache;
	}
	if (cache->feature == NULL ||
		VARSIZE_ANY_EXHDR(cache->feature) != VARSIZE_ANY_EXHDR(feature) ||
		memcmp(VARDATA_ANY(cache->feature), VARDATA_ANY(feature), VARSIZE_ANY_EXHDR(feature)) != 0)
	{
		if (cache->feature != NULL)
			pfree(cache->feature);
		cache->feature = (text *) MemoryContextAlloc(mcxt, VARHDRSZ + VARSIZE_ANY_EXHDR(feature));
		SET_VARSIZE(cache->feature, VARHDRSZ + VARSIZE_ANY_EXHDR(feature));
		memcpy(VARDATA(cache->feature), VARDATA_ANY(feature), VARSIZE_ANY_EXHDR(feature));
		ResetAccounts(cache, mcxt);
	}
	ForgetStaleAnswers(cache, mcxt);
	if (cache->have_last && cache->last_account == account_id)
		PG_RETURN_BOOL(cache->last_granted);

	entry = (GrantedEntry *) hash_search(cache->accounts, &account_id, HASH_FIND, NULL);
	if (entry != NULL)
		granted = entry->granted;
	else
	{
		granted = FeatureEntitled(cache, account_id);
		if (!granted)
			RequireFeature(cache);
		if (hash_get_num_entries(cache->accounts) >= MAX_REMEMBERED_ACCOUNTS)
			ResetAccounts(cache, mcxt);
		entry = (GrantedEntry *) hash_search(cache->accounts, &account_id, HASH_ENTER, &found);
		entry->granted = granted;
	}
	cache->last_account = account_id;
	cache->last_granted = granted;
	cache->have_last = true;
	PG_RETURN_BOOL(granted);
}
