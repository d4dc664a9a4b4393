/* elfdeps.h — the shared libraries an ELF file says it needs (its DT_NEEDED
 * entries), read from the file's bytes without loading it.  pympi_real.c
 * uses it to tell an mpi4py built for MPICH from one built for another MPI.
 *
 * Pure function of its input (any thread); the bytes may be hostile: every
 * offset and size is checked against len, nothing is read outside data.
 */
#ifndef IPPC_ENGINE_ELFDEPS_H
#define IPPC_ENGINE_ELFDEPS_H

#include <stddef.h>

/* Writes the DT_NEEDED names of the 64-bit little-endian ELF file in
 * data[0..len), separated by single spaces, into out (always
 * NUL-terminated; cut at out_len - 1 bytes).  0 when the file is such an
 * ELF file (with no dynamic section, out is ""); -1 when it is not one or
 * its headers point outside it (out is then ""). */
int elfdeps_needed(const unsigned char *data, size_t len, char *out, size_t out_len);

#endif
