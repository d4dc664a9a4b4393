/* lmpi_park.c — parked operations (lmpi.h: lmpi_parking_*): a started
 * send or collective that an interrupt left behind, kept with its buffers
 * until MPI completes it.  Each MPI module keeps its own lot. */
#include "lmpi.h"

#include <assert.h>
#include <stdlib.h>

int lmpi_parking_add(lmpi_parking *lot, lmpi_commstate *cs, MPI_Request req, void *op,
                     lmpi_parked_release release, int collective)
{
    assert(lot->count <= lot->cap);
    if (lot->count == lot->cap) {
        size_t cap = lot->cap ? lot->cap * 2 : 8;
        lmpi_parked *p = realloc(lot->items, cap * sizeof *p);
        if (!p)
            return -1;
        lot->items = p;
        lot->cap = cap;
    }
    cs->refs++;
    if (collective)
        cs->pending++;
    lot->items[lot->count++] = (lmpi_parked){req, op, release, cs, collective};
    lmpi_outstanding_add(1);
    return 0;
}

void lmpi_parking_reap(lmpi_parking *lot)
{
    if (lot->count == 0 || !lmpi_active())
        return;
    for (size_t i = 0; i < lot->count;) {
        int done = 0;
        int rc = MPI_Test(&lot->items[i].req, &done, MPI_STATUS_IGNORE);
        if (!done && rc == MPI_SUCCESS) {
            i++;
            continue;
        }
        lmpi_parked *p = &lot->items[i];
        if (p->collective)
            p->cs->pending--;
        lmpi_commstate_release(p->cs);
        p->release(p->op);
        lot->items[i] = lot->items[--lot->count];
        lmpi_outstanding_add(-1);
    }
}
