/* test_engine_elfdeps.c — elfdeps_needed (engine/elfdeps.c): the libraries
 * this test binary itself needs, read from its own file; files that are
 * not 64-bit little-endian ELF, cut short, or whose headers point outside
 * them; output buffers too small for the answer, of every size; a file
 * broken after a part that reads well. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <elf.h>

#include "elfdeps.h"

typedef struct file_bytes {
    unsigned char *data;
    size_t len;
} file_bytes;

static file_bytes read_self(void)
{
    file_bytes f = {NULL, 0};
    FILE *fp = fopen("/proc/self/exe", "rb");
    assert_non_null(fp);
    size_t cap = 1 << 20;
    f.data = malloc(cap);
    assert_non_null(f.data);
    size_t n;
    while ((n = fread(f.data + f.len, 1, cap - f.len, fp)) > 0) {
        f.len += n;
        if (f.len == cap) {
            cap *= 2;
            f.data = realloc(f.data, cap);
            assert_non_null(f.data);
        }
    }
    assert_int_equal(fclose(fp), 0);
    return f;
}

static void test_own_binary(void **state)
{
    file_bytes f = read_self();
    char out[4096];
    assert_int_equal(elfdeps_needed(f.data, f.len, out, sizeof out), 0);
    /* linked with cmocka, libc and (the engine's objects) MPICH */
    assert_non_null(strstr(out, "libc.so.6"));
    assert_non_null(strstr(out, "libcmocka"));
    assert_non_null(strstr(out, "libmpich"));
    /* a small buffer gets a cut, terminated prefix */
    char small[8];
    memset(small, 'x', sizeof small);
    assert_int_equal(elfdeps_needed(f.data, f.len, small, sizeof small), 0);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, out, sizeof small - 1);
    free(f.data);
}

static void test_not_elf(void **state)
{
    char out[64] = "stale";
    const unsigned char text[] = "#!/bin/sh\necho not a library\n";
    assert_int_equal(elfdeps_needed(text, sizeof text, out, sizeof out), -1);
    assert_string_equal(out, "");
    assert_int_equal(elfdeps_needed(text, 0, out, sizeof out), -1);
    assert_int_equal(elfdeps_needed(text, sizeof text, out, 0), -1);

    /* a 32-bit or big-endian header is not what this platform loads */
    file_bytes f = read_self();
    f.data[EI_CLASS] = ELFCLASS32;
    assert_int_equal(elfdeps_needed(f.data, f.len, out, sizeof out), -1);
    f.data[EI_CLASS] = ELFCLASS64;
    f.data[EI_DATA] = ELFDATA2MSB;
    assert_int_equal(elfdeps_needed(f.data, f.len, out, sizeof out), -1);
    free(f.data);
}

static void test_cut_and_corrupt(void **state)
{
    file_bytes f = read_self();
    char out[256];
    /* every cut of the file: never a read outside it (ASan), and a file
     * cut before its section headers is refused */
    for (size_t len = 0; len < f.len; len += len < 4096 ? 1 : 4093)
        assert_true(elfdeps_needed(f.data, len, out, sizeof out) <= 0);
    Elf64_Ehdr eh;
    memcpy(&eh, f.data, sizeof eh);
    assert_int_equal(elfdeps_needed(f.data, (size_t)eh.e_shoff, out, sizeof out), -1);
    /* section headers said to lie past the end */
    Elf64_Ehdr bad = eh;
    bad.e_shoff = (Elf64_Off)f.len;
    memcpy(f.data, &bad, sizeof bad);
    assert_int_equal(elfdeps_needed(f.data, f.len, out, sizeof out), -1);
    bad.e_shoff = UINT64_MAX - 8;
    memcpy(f.data, &bad, sizeof bad);
    assert_int_equal(elfdeps_needed(f.data, f.len, out, sizeof out), -1);
    bad = eh;
    bad.e_shentsize = 1;
    memcpy(f.data, &bad, sizeof bad);
    assert_int_equal(elfdeps_needed(f.data, f.len, out, sizeof out), -1);
    /* no section headers at all: nothing needed */
    bad = eh;
    bad.e_shnum = 0;
    memcpy(f.data, &bad, sizeof bad);
    assert_int_equal(elfdeps_needed(f.data, f.len, out, sizeof out), 0);
    assert_string_equal(out, "");
    free(f.data);
}

/* A made-up ELF file: section 1 is a dynamic section needing "liba.so"
 * and "libbb.so" through the string table in section 2; section 3 is a
 * second dynamic section whose bytes lie wherever *broken_off says. */
typedef struct tiny_elf {
    Elf64_Ehdr eh;
    Elf64_Shdr sh[4];
    Elf64_Dyn dyn[3];
    char strs[24];
} tiny_elf;

static tiny_elf make_tiny(uint64_t broken_off)
{
    tiny_elf t;
    memset(&t, 0, sizeof t);
    memcpy(t.eh.e_ident, ELFMAG, SELFMAG);
    t.eh.e_ident[EI_CLASS] = ELFCLASS64;
    t.eh.e_ident[EI_DATA] = ELFDATA2LSB;
    t.eh.e_shoff = offsetof(tiny_elf, sh);
    t.eh.e_shentsize = sizeof(Elf64_Shdr);
    t.eh.e_shnum = 4;
    memcpy(t.strs, "\0liba.so\0libbb.so", 18);
    t.dyn[0] = (Elf64_Dyn){.d_tag = DT_NEEDED, .d_un.d_val = 1};
    t.dyn[1] = (Elf64_Dyn){.d_tag = DT_NEEDED, .d_un.d_val = 9};
    t.dyn[2] = (Elf64_Dyn){.d_tag = DT_NULL};
    t.sh[1] = (Elf64_Shdr){.sh_type = SHT_DYNAMIC,
                           .sh_offset = offsetof(tiny_elf, dyn),
                           .sh_size = sizeof t.dyn,
                           .sh_link = 2};
    t.sh[2] = (Elf64_Shdr){
        .sh_type = SHT_STRTAB, .sh_offset = offsetof(tiny_elf, strs), .sh_size = sizeof t.strs};
    t.sh[3] = t.sh[1];
    t.sh[3].sh_offset = broken_off;
    return t;
}

static void test_every_buffer_size(void **state)
{
    /* the same library list read twice (sections 1 and 3) */
    tiny_elf t = make_tiny(offsetof(tiny_elf, dyn));
    char out[64];
    assert_int_equal(elfdeps_needed((const unsigned char *)&t, sizeof t, out, sizeof out), 0);
    assert_string_equal(out, "liba.so libbb.so liba.so libbb.so");
    /* every size cuts the same list, terminated: the size where the
     * separating space takes the last byte before the NUL included */
    for (size_t n = 1; n <= strlen(out) + 1; n++) {
        char cut[64];
        memset(cut, 'x', sizeof cut);
        assert_int_equal(elfdeps_needed((const unsigned char *)&t, sizeof t, cut, n), 0);
        assert_int_equal(strlen(cut), n - 1);
        assert_memory_equal(cut, out, n - 1);
    }
}

static void test_broken_after_good(void **state)
{
    /* section 1 reads well, section 3 points past the end: the answer is
     * -1 and out is empty, never the half read before the break */
    tiny_elf t = make_tiny(UINT64_MAX - 4);
    char out[64] = "stale";
    assert_int_equal(elfdeps_needed((const unsigned char *)&t, sizeof t, out, sizeof out), -1);
    assert_string_equal(out, "");
    t.sh[3].sh_offset = offsetof(tiny_elf, dyn);
    t.sh[3].sh_link = 9; /* no such section */
    assert_int_equal(elfdeps_needed((const unsigned char *)&t, sizeof t, out, sizeof out), -1);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_binary),        cmocka_unit_test(test_not_elf),
        cmocka_unit_test(test_cut_and_corrupt),   cmocka_unit_test(test_every_buffer_size),
        cmocka_unit_test(test_broken_after_good),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
