-- psum.lua — the seed's psum.py in the engines' language.
--
-- Each engine holds its own slice `a` of a distributed array (after
-- `scatter`); psum adds up the local part with a:sum() and combines the
-- partial sums of every rank with an MPI allreduce, so every engine gets
-- the total.  Data between engines goes through MPI, never the controller.
function psum(a) return mpi.allreduce(a:sum(), "sum") end
