"""Run twice by `pympi_host --twice` (tests/mpi/run.py): the MPI module
works again in a second interpreter of the same process (new module
objects, the same communicators).  Without NumPy, which cannot be loaded
twice in one process.  Prints `reinit ok RANK` when all is well."""
from mpi4py import MPI
import mpi4py.MPI

comm = MPI.COMM_WORLD
p = comm.size
assert mpi4py.MPI is MPI and comm.allreduce(comm.rank) == p * (p - 1) // 2
out = bytearray(8)
comm.Allreduce([bytearray((1).to_bytes(8, "little")), MPI.INT64_T], [out, MPI.INT64_T], op=MPI.SUM)
assert int.from_bytes(out, "little") == p
try:
    comm.send(1, dest=p)
    raise AssertionError("send to a missing rank succeeded")
except MPI.Exception as e:
    assert e.Get_error_class() == MPI.ERR_RANK
dup = comm.Dup()
assert dup.bcast("x" if comm.rank == 0 else None) == "x"
dup.Free()
print(f"reinit ok {comm.rank}", flush=True)
