#!/usr/bin/perl
# The clock lint (issue 20, item 5): prints every line of the files named
# that reads a clock other than subscription.now() (SQL) or
# SubscriptionNow() (C, src/clock.c), as FILE:LINE: TEXT.  A line that
# truly means wall time (a lease, a lock's timeout) says so with a comment
# holding "wall time:" and its reason, and is let through.
use strict;
use warnings;

my $clock = qr/(?<![\w])(?:now\s*\(\s*\)|current_timestamp|statement_timestamp|transaction_timestamp
               |clock_timestamp|timeofday\s*\(|localtimestamp|localtime\b|current_date|current_time\b
               |'(?:now|today|tomorrow|yesterday)'
               |GetCurrentTimestamp|GetCurrentStatementStartTimestamp|GetCurrentTransactionStartTimestamp
               |GetCurrentTransactionStopTimestamp|GetSQLCurrent\w*|GetSQLLocal\w*|gettimeofday|clock_gettime
               |time\s*\(\s*NULL\s*\))/ix;
my $found = 0;
while (my $line = <>) {
    if ($line !~ /wall time:/) {
        (my $rest = $line) =~ s/subscription\.now\(\)//g;
        if ($rest =~ $clock) {
            print "$ARGV:$.: $line";
            $found++;
        }
    }
    close ARGV if eof;
}
exit($found ? 1 : 0);
