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

#endif							/* SUBSCRIPTION_H */
