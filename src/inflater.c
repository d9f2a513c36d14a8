/*
 * inflater: the list of built-in inflaters (see inflater.h).
 */
#include "inflater.h"

#include <string.h>

const struct inflater_ops *const inflater_all[] = {&inflater_zlib, &inflater_isal, NULL};

const struct inflater_ops *inflater_find(const char *name)
{
    for (const struct inflater_ops *const *p = inflater_all; *p; p++)
        if (strcmp((*p)->name, name) == 0)
            return *p;
    return NULL;
}
