/* mountinfo: see mountinfo.h. A line reads
 * "ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS",
 * with spaces, tabs, newlines and backslashes in paths escaped as octal. */
#include "mountinfo.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

/* Decodes the octal escapes of a mountinfo field in place. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

/* Parses one line; returns whether it is a mount at path. */
static int parse(char *line, const char *path, dev_t *dev, char *fstype, size_t fstype_len)
{
    char *save = NULL, *f[5];
    for (int i = 0; i < 5; i++)
        if (!(f[i] = strtok_r(i ? NULL : line, " \n", &save)))
            return 0;
    unescape(f[4]);
    if (strcmp(f[4], path) != 0)
        return 0;
    unsigned maj, min;
    if (sscanf(f[2], "%u:%u", &maj, &min) != 2)
        return 0;
    char *t;
    while ((t = strtok_r(NULL, " \n", &save)) && strcmp(t, "-") != 0)
        ; /* optional fields */
    if (!t || !(t = strtok_r(NULL, " \n", &save)))
        return 0;
    unescape(t);
    if (dev)
        *dev = makedev(maj, min);
    if (fstype && fstype_len)
        snprintf(fstype, fstype_len, "%s", t);
    return 1;
}

int mountinfo_lookup(const char *path, dev_t *dev, char *fstype, size_t fstype_len)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    char *line = NULL;
    size_t cap = 0;
    int rc = -ENOENT;
    while (getline(&line, &cap, f) > 0) /* later lines are mounted on top of earlier ones */
        if (parse(line, path, dev, fstype, fstype_len))
            rc = 0;
    free(line);
    fclose(f);
    return rc;
}
