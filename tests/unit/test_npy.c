/*
 * Unit tests for npy (the .npy header parser) against hand-made headers: the headers numpy
 * writes for each kind of dtype (taken from numpy 1.24's np.lib.format output), and broken
 * or hostile ones that must be refused without reading past the buffer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "npy.h"

/* A version 1.0 (major 1) or 2.0 header around dict, padded as numpy pads: to 64 bytes with
 * spaces and a final newline. Returns a malloc'd buffer of *len bytes. */
static unsigned char *make(unsigned major, const char *dict, size_t *len)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64;
    unsigned char *b = malloc(total);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    size_t hl = total - pre;
    b[8] = (unsigned char)hl;
    b[9] = (unsigned char)(hl >> 8);
    if (major != 1) {
        b[10] = (unsigned char)(hl >> 16);
        b[11] = (unsigned char)(hl >> 24);
    }
    memcpy(b + pre, dict, dl);
    memset(b + pre + dl, ' ', total - pre - dl - 1);
    b[total - 1] = '\n';
    *len = total;
    return b;
}

struct good {
    unsigned major;
    const char *dict, *descr, *shape;
    bool fortran;
};

static void test_numpy_headers(void)
{
    static const struct good cases[] = {
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000, 3), }", "<f8",
         "(1000, 3)", false},
        {1, "{'descr': '<i4', 'fortran_order': True, 'shape': (3, 4), }", "<i4", "(3, 4)", true},
        {1, "{'descr': '>u2', 'fortran_order': False, 'shape': (5,), }", ">u2", "(5,)", false},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", "<f4", "()", false},
        {1, "{'descr': '|b1', 'fortran_order': False, 'shape': (0,), }", "|b1", "(0,)", false},
        {1, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "|O", "(2,)", false},
        {1, "{'descr': '<U7', 'fortran_order': False, 'shape': (0, 4), }", "<U7", "(0, 4)",
         false},
        {1, "{'descr': [('a', '<i4'), ('b', '>f8', (2,))], 'fortran_order': False, "
            "'shape': (4,), }",
         "[('a', '<i4'), ('b', '>f8', (2,))]", "(4,)", false},
        {1, "{'descr': [('', '|V4'), ('x', [('y', '<i2'), ('z', '|u1')])], "
            "'fortran_order': False, 'shape': (1,), }",
         "[('', '|V4'), ('x', [('y', '<i2'), ('z', '|u1')])]", "(1,)", false},
        {2, "{'descr': '<c16', 'fortran_order': False, 'shape': (2, 2, 2), }", "<c16",
         "(2, 2, 2)", false},
        /* other writers: double quotes, other key order, no trailing comma */
        {1, "{\"shape\": (7,), \"fortran_order\": False, \"descr\": \"<i8\"}", "<i8", "(7,)",
         false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        check_context("case %zu", i);
        size_t len;
        unsigned char *b = make(cases[i].major, cases[i].dict, &len);
        struct npy_header h;
        CHECK_EQ_I64(npy_header_size(b, len), (int64_t)len);
        if (CHECK_EQ_I64(npy_parse(b, len, &h), 0)) {
            char shape[64];
            CHECK_EQ_STR(h.descr, cases[i].descr);
            CHECK(npy_format_shape(&h, shape, sizeof shape) > 0);
            CHECK_EQ_STR(shape, cases[i].shape);
            CHECK_EQ_U64(h.fortran_order, cases[i].fortran);
            CHECK_EQ_U64(h.major, cases[i].major);
            CHECK_EQ_U64(h.data_off, len);
            CHECK_EQ_U64(h.header_len, len - (cases[i].major == 1 ? 10 : 12));
            npy_free(&h);
        }
        free(b);
    }
}

static void test_refused(void)
{
    static const char *const dicts[] = {
        "{'descr': '<f8', 'fortran_order': False}",                        /* no shape */
        "{'descr': '<f8', 'fortran_order': False, 'shape': (5), }",        /* not a tuple */
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }",
        "{'descr': '<f8', 'fortran_order': 0, 'shape': (1,), }",
        "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), } junk",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }",
        "{'descr': [], 'fortran_order': False, 'shape': (1,), }",
        "{'descr': [('a', '<i4'), ], 'fortran_order': False, 'shape': (1,)",   /* unclosed */
        "{'descr': '<f\\x38', 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '', 'fortran_order': False, 'shape': (1,), }",
        "",
    };
    for (size_t i = 0; i < sizeof dicts / sizeof *dicts; i++) {
        check_context("dict %zu", i);
        size_t len;
        unsigned char *b = make(1, dicts[i], &len);
        struct npy_header h;
        CHECK_EQ_I64(npy_parse(b, len, &h), -EINVAL);
        CHECK(h.descr == NULL);
        free(b);
    }
}

/* Deep nesting is refused by depth, not by running out of stack. */
static void test_deep_nesting(void)
{
    char dict[8192];
    size_t n = (size_t)snprintf(dict, sizeof dict, "{'descr': ");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(dict + n, sizeof dict - n, "[('a', ");
    snprintf(dict + n, sizeof dict - n, "'<i4')], 'fortran_order': False, 'shape': (1,), }");
    size_t len;
    unsigned char *b = make(1, dict, &len);
    struct npy_header h;
    CHECK_EQ_I64(npy_parse(b, len, &h), -EINVAL);
    free(b);
}

static void test_preamble(void)
{
    const unsigned char v1[] = "\x93NUMPY\x01\x00\x76\x00";
    const unsigned char v2big[] = "\x93NUMPY\x02\x00\xff\xff\xff\x7f";
    const unsigned char v4[] = "\x93NUMPY\x04\x00\x76\x00\x00\x00";
    CHECK_EQ_I64(npy_header_size(v1, 10), 128);
    CHECK_EQ_I64(npy_header_size(v1, 9), -EAGAIN);
    CHECK_EQ_I64(npy_header_size(v1, 3), -EAGAIN);
    CHECK_EQ_I64(npy_header_size((const unsigned char *)"PK\x03\x04", 4), -EINVAL);
    CHECK_EQ_I64(npy_header_size(v2big, 12), -EINVAL); /* a 2 GiB claim: refused unread */
    CHECK_EQ_I64(npy_header_size(v4, 12), -EINVAL);
    /* fewer bytes than the header claims */
    size_t len;
    unsigned char *b = make(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", &len);
    struct npy_header h;
    CHECK_EQ_I64(npy_parse(b, len - 1, &h), -EINVAL);
    free(b);
}

static void test_shape_text(void)
{
    struct npy_header h = {.ndim = NPY_MAX_DIMS};
    for (unsigned i = 0; i < NPY_MAX_DIMS; i++)
        h.shape[i] = UINT64_MAX;
    char big[1500], small[10];
    CHECK(npy_format_shape(&h, big, sizeof big) > 0);
    CHECK_EQ_I64(npy_format_shape(&h, small, sizeof small), -ENOSPC);
    h.ndim = 1;
    h.shape[0] = 12345678;
    CHECK_EQ_I64(npy_format_shape(&h, small, sizeof small), -ENOSPC); /* "(12345678,)" is 11 */
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN_TEST(test_numpy_headers);
    RUN_TEST(test_refused);
    RUN_TEST(test_deep_nesting);
    RUN_TEST(test_preamble);
    RUN_TEST(test_shape_text);
    return check_summary("test_npy");
}
