/* secret.h — comparing secrets (tokens, engine keys) without leaking, through
 * timing, how much of a guess was right.  Pure. */
#ifndef IPPC_SECRET_H
#define IPPC_SECRET_H

/* 1 if given equals want; the time taken depends only on want's length. */
int secret_equal(const char *given, const char *want);

#endif
