/* test_jobspec.c — common/jobspec.c: engine job specs and the launcher's
 * control lines (what is accepted, what is refused and why, round trips). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "jobspec.h"

static int parse(const char *line, jobspec_request *out, char *err, size_t len)
{
    return jobspec_request_parse(line, strlen(line), out, err, len);
}

static void expect_refused(const char *line, const char *why)
{
    jobspec_request request;
    char err[512] = "";

    if (parse(line, &request, err, sizeof err) == 0)
        print_error("accepted: %s\n", line);
    else if (strstr(err, why) == NULL)
        print_error("'%s' refused with '%s', expected '%s'\n", line, err, why);
    assert_int_equal(parse(line, &request, err, sizeof err), -1);
    assert_non_null(strstr(err, why));
}

static void test_kinds(void **state)
{
    jobspec_kind kind;

    (void)state;
    for (int k = JOB_MPI; k <= JOB_PBS; k++) {
        assert_int_equal(jobspec_kind_parse(jobspec_kind_name((jobspec_kind)k), &kind), 0);
        assert_int_equal(kind, k);
    }
    assert_int_equal(jobspec_kind_parse("ssh", &kind), -1);
    assert_int_equal(jobspec_kind_parse("", &kind), -1);
    assert_int_equal(jobspec_kind_parse("MPI", &kind), -1);
}

static void test_add_round_trip(void **state)
{
    jobspec spec;
    jobspec_request request;
    char err[512];
    json_t *line;
    char *text;

    (void)state;
    jobspec_init(&spec);
    spec.kind = JOB_SLURM;
    spec.engines = 8;
    spec.ppn = 4;
    strcpy(spec.partition, "compute");
    strcpy(spec.time_limit, "1-00:00:00");
    strcpy(spec.account, "proj-42");
    strcpy(spec.mpiexec_args, "--cpu-bind=cores");
    assert_int_equal(jobspec_add_directive(&spec, "--exclusive", err, sizeof err), 0);
    assert_int_equal(jobspec_validate(&spec, err, sizeof err), 0);

    line =
        json_pack("{s:s, s:o, s:f}", "op", "add", "spec", jobspec_to_json(&spec), "timeout", 12.5);
    text = json_dumps(line, JSON_COMPACT);
    assert_int_equal(parse(text, &request, err, sizeof err), 0);
    assert_int_equal(request.op, JOBSPEC_ADD);
    assert_true(request.timeout == 12.5);
    assert_int_equal(request.spec.kind, JOB_SLURM);
    assert_int_equal(request.spec.engines, 8);
    assert_int_equal(request.spec.ppn, 4);
    assert_string_equal(request.spec.partition, "compute");
    assert_string_equal(request.spec.time_limit, "1-00:00:00");
    assert_string_equal(request.spec.account, "proj-42");
    assert_string_equal(request.spec.mpiexec_args, "--cpu-bind=cores");
    assert_int_equal(request.spec.n_directives, 1);
    assert_string_equal(request.spec.directives[0], "--exclusive");
    free(text);
    json_decref(line);
}

static void test_other_ops(void **state)
{
    jobspec_request request;
    char err[512];

    (void)state;
    assert_int_equal(parse("{\"op\":\"remove\",\"job\":\"j3\"}", &request, err, sizeof err), 0);
    assert_int_equal(request.op, JOBSPEC_REMOVE);
    assert_string_equal(request.job, "j3");
    assert_int_equal(parse("{\"op\":\"jobs\"}\n", &request, err, sizeof err), 0);
    assert_int_equal(request.op, JOBSPEC_LIST);
    /* Defaults: kind mpi, no timeout. */
    assert_int_equal(parse("{\"op\":\"add\",\"spec\":{\"engines\":3}}", &request, err, sizeof err),
                     0);
    assert_int_equal(request.spec.kind, JOB_MPI);
    assert_int_equal(request.spec.engines, 3);
    assert_true(request.timeout == 0);
}

static void test_refusals(void **state)
{
    static char huge[JOBSPEC_REQUEST_MAX + 64];

    (void)state;
    expect_refused("", "not JSON");
    expect_refused("{", "not JSON");
    expect_refused("[]", "object with \"op\"");
    expect_refused("{\"op\":1}", "object with \"op\"");
    expect_refused("{\"op\":\"jobs\",\"op\":\"jobs\"}", "not JSON");
    expect_refused("{\"op\":\"start\"}", "unknown op");
    expect_refused("{\"op\":\"jobs\",\"extra\":true}", "unknown field");
    expect_refused("{\"op\":\"add\"}", "\"spec\" must be an object");
    expect_refused("{\"op\":\"add\",\"spec\":{}}", "\"engines\" is required");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":0}}", "\"engines\" must be");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":100001}}", "\"engines\" must be");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1.5}}", "\"engines\" must be");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"ppn\":-1}}", "\"ppn\" must be");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"kind\":\"ssh\"}}", "\"kind\"");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"nodes\":2}}", "unknown field");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"hostfile\":7}}", "must be a string");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"hostfile\":\"a\\u0000b\"}}", "NUL");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"mpiexec_args\":\"-x\\ny\"}}",
                   "not allowed");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"kind\":\"slurm\","
                   "\"partition\":\"a;b\"}}",
                   "not allowed");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"kind\":\"slurm\","
                   "\"time\":\"1 h\"}}",
                   "not allowed");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"kind\":\"local\","
                   "\"hostfile\":\"/h\"}}",
                   "hostfile is for");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"directives\":\"x\"}}",
                   "list of strings");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"directives\":[\"\"]}}",
                   "empty batch directive");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1,\"directives\":"
                   "[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
                   "\"a\",\"a\",\"a\",\"a\",\"a\"]}}",
                   "at most 16");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1},\"timeout\":0}", "\"timeout\"");
    expect_refused("{\"op\":\"add\",\"spec\":{\"engines\":1},\"timeout\":\"5\"}", "\"timeout\"");
    expect_refused("{\"op\":\"remove\"}", "\"job\" must be");
    expect_refused("{\"op\":\"remove\",\"job\":\"\"}", "\"job\" must be");
    expect_refused("{\"op\":\"remove\",\"job\":\"j1 j2\"}", "not allowed");

    memset(huge, ' ', sizeof huge - 1);
    huge[0] = '{';
    huge[sizeof huge - 2] = '}';
    expect_refused(huge, "at most");
}

static void test_field_limits(void **state)
{
    jobspec spec;
    char err[512];
    char long_text[300];

    (void)state;
    jobspec_init(&spec);
    memset(long_text, 'p', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    assert_int_equal(jobspec_set_text(spec.partition, sizeof spec.partition, "--partition",
                                      long_text, JOBSPEC_NAME_CHARS, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "longer than 127"));
    assert_int_equal(jobspec_set_text(spec.partition, sizeof spec.partition, "--partition", "gpu",
                                      JOBSPEC_NAME_CHARS, err, sizeof err),
                     0);
    assert_string_equal(spec.partition, "gpu");
    assert_int_equal(jobspec_add_directive(&spec, long_text, err, sizeof err), -1);
    spec.engines = 0;
    assert_int_equal(jobspec_validate(&spec, err, sizeof err), -1);
    spec.engines = 1;
    assert_int_equal(jobspec_validate(&spec, err, sizeof err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds),        cmocka_unit_test(test_add_round_trip),
        cmocka_unit_test(test_other_ops),    cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_field_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
