/* test_engine_elfdeps.c — elfdeps_needed (engine/elfdeps.c): the libraries
 * this test binary itself needs, read from its own file; files that are
 * not 64-bit little-endian ELF, cut short, or whose headers point outside
 * them; output buffers too small for the answer. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_binary),
        cmocka_unit_test(test_not_elf),
        cmocka_unit_test(test_cut_and_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
