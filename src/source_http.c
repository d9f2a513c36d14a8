/* source_http: remote archives. This build has none; see source.h. */
#include <errno.h>
#include <stdio.h>

#include "source.h"

int source_http_open(const char *url, const struct source_options *o, struct source **out,
                     char *msg, size_t msg_len)
{
    (void)url, (void)o, (void)out;
    snprintf(msg, msg_len, "remote archives are not supported by this build");
    return -EPROTONOSUPPORT;
}
