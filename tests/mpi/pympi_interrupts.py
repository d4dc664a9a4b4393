"""Interrupts of the Python MPI module, run on every rank by pympi_host
under `mpiexec.mpich -n 4` (tests/mpi/run.py): the engine's interrupt flag
(set here from another thread by _pympi_host.interrupt_after) stops a rank
waiting in MPI with KeyboardInterrupt; the process, its communicators and
its messages survive.  Same report format as pympi_checks.py.
"""
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pympi_checks import comm, eq, raises, rank, run_checks, size  # noqa: E402

from mpi4py import MPI  # noqa: E402
from _pympi_host import clear_interrupt, interrupt_after, interrupt_now  # noqa: E402

CHECKS = []


def check(f):
    CHECKS.append(f)
    return f


@check
def interrupted_Recv_releases_the_GIL():
    if rank == 0:
        # The flag is set by a Python thread, which can only run while Recv
        # waits without the GIL.
        ran = []

        def interrupter():
            time.sleep(0.1)
            ran.append(True)
            interrupt_after(0)

        threading.Thread(target=interrupter).start()
        buf = np.zeros(4)
        raises(KeyboardInterrupt, comm.Recv, buf, source=1, tag=77)
        clear_interrupt()
        assert ran == [True]
    comm.Barrier()
    # The interrupted receive left no trace: the message sent now arrives in
    # the next Recv, whole.
    if rank == 1:
        comm.Send(np.arange(4.0), dest=0, tag=77)
    if rank == 0:
        buf = np.zeros(4)
        comm.Recv(buf, source=1, tag=77)
        eq(buf, np.arange(4.0))
    assert comm.allreduce(1) == size


@check
def interrupted_object_recv():
    if rank == 3:
        interrupt_after(0.1)
        raises(KeyboardInterrupt, comm.recv, source=2, tag=78)
        clear_interrupt()
    comm.Barrier()
    if rank == 2:
        comm.send({"late": True}, dest=3, tag=78)
    if rank == 3:
        assert comm.recv(source=2, tag=78) == {"late": True}
    comm.Barrier()


@check
def interrupted_request_waits():
    if rank == 1:
        r = comm.irecv(source=2, tag=79)
        b = np.zeros(3)
        rb = comm.Irecv(b, source=2, tag=80)
        interrupt_after(0.1)
        raises(KeyboardInterrupt, r.wait)
        raises(KeyboardInterrupt, rb.Wait)  # the flag is still set
        raises(KeyboardInterrupt, MPI.Request.Waitall, [rb])
        clear_interrupt()
        assert r.test() == (False, None) and rb.Test() is False
    comm.Barrier()
    if rank == 2:
        comm.send("after", dest=1, tag=79)
        comm.Send(np.arange(3.0), dest=1, tag=80)
    if rank == 1:
        assert r.wait() == "after" and rb.Wait() is True
        eq(b, np.arange(3.0))
    comm.Barrier()


@check
def interrupted_collective_stays_pending_then_in_step():
    sub = comm.Dup()
    if rank == 0:
        interrupt_after(0.1)
        raises(KeyboardInterrupt, sub.Barrier)  # the others are not there
        clear_interrupt()
        e = raises(MPI.Exception, sub.bcast, 1)
        assert e.Get_error_class() == MPI.ERR_PENDING and "pending" in str(e)
        assert sub.rank == 0  # not a collective: fine
    comm.Barrier()
    if rank != 0:
        sub.Barrier()  # completes rank 0's interrupted barrier
    else:
        while True:  # until MPI completed the parked barrier
            try:
                sub.Barrier()
                break
            except MPI.Exception as e:
                assert e.Get_error_class() == MPI.ERR_PENDING
                time.sleep(0.01)
    if rank != 0:
        sub.Barrier()  # pairs with rank 0's first successful one
    assert sub.allreduce(rank) == size * (size - 1) // 2
    sub.Free()


@check
def flag_already_set_starts_nothing():
    interrupt_now()
    raises(KeyboardInterrupt, comm.Barrier)
    raises(KeyboardInterrupt, comm.allreduce, 1)
    clear_interrupt()
    assert comm.allreduce(1) == size  # nothing was pending


if __name__ == "__main__":
    run_checks(CHECKS, comm, rank)
