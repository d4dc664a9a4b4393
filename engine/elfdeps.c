/* elfdeps.c — DT_NEEDED entries of an ELF file's bytes (elfdeps.h).
 *
 * Reads the section headers (not the program headers: the file is not
 * being loaded, and the linker writes both) and, for each SHT_DYNAMIC
 * section, its entries and the string table it links to.  Headers are
 * copied out with memcpy, so no unaligned or out-of-bounds access whatever
 * the offsets say.
 */
#include "elfdeps.h"

#include <elf.h>
#include <stdint.h>
#include <string.h>

/* 1 when [off, off + size) lies within len bytes. */
static int within(uint64_t off, uint64_t size, size_t len)
{
    return off <= len && size <= len - off;
}

/* Appends the name at strs[at..] (at most max bytes, to its NUL) to out. */
static void append(char *out, size_t out_len, const unsigned char *strs, size_t max)
{
    size_t used = strlen(out);
    size_t n = strnlen((const char *)strs, max);
    if (used && used + 1 < out_len) {
        out[used++] = ' ';
        out[used] = 0; /* the space may take the last byte before the NUL */
    }
    if (used + 1 >= out_len)
        return;
    if (n > out_len - 1 - used)
        n = out_len - 1 - used;
    memcpy(out + used, strs, n);
    out[used + n] = 0;
}

int elfdeps_needed(const unsigned char *data, size_t len, char *out, size_t out_len)
{
    if (!out || out_len == 0)
        return -1;
    out[0] = 0;
    Elf64_Ehdr eh;
    if (len < sizeof eh || memcmp(data, ELFMAG, SELFMAG) != 0 || data[EI_CLASS] != ELFCLASS64 ||
        data[EI_DATA] != ELFDATA2LSB)
        return -1;
    memcpy(&eh, data, sizeof eh);
    if (eh.e_shnum == 0)
        return 0;
    if (eh.e_shentsize != sizeof(Elf64_Shdr) ||
        !within(eh.e_shoff, (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr), len))
        return -1;
    for (size_t i = 0; i < eh.e_shnum; i++) {
        Elf64_Shdr sh, strtab;
        memcpy(&sh, data + eh.e_shoff + i * sizeof sh, sizeof sh);
        if (sh.sh_type != SHT_DYNAMIC)
            continue;
        if (sh.sh_link >= eh.e_shnum || !within(sh.sh_offset, sh.sh_size, len))
            goto bad;
        memcpy(&strtab, data + eh.e_shoff + (size_t)sh.sh_link * sizeof strtab, sizeof strtab);
        if (!within(strtab.sh_offset, strtab.sh_size, len))
            goto bad;
        const unsigned char *strs = data + strtab.sh_offset;
        size_t n = sh.sh_size / sizeof(Elf64_Dyn);
        for (size_t j = 0; j < n; j++) {
            Elf64_Dyn dyn;
            memcpy(&dyn, data + sh.sh_offset + j * sizeof dyn, sizeof dyn);
            if (dyn.d_tag == DT_NULL)
                break;
            if (dyn.d_tag == DT_NEEDED && dyn.d_un.d_val < strtab.sh_size)
                append(out, out_len, strs + dyn.d_un.d_val,
                       (size_t)(strtab.sh_size - dyn.d_un.d_val));
        }
    }
    return 0;
bad:
    /* A later dynamic section may be broken after an earlier one was read:
     * the answer is -1 with nothing in out, never half a list. */
    out[0] = 0;
    return -1;
}
