/* dynlib: see dynlib.h. */
#include "dynlib.h"

#include <dlfcn.h>

bool dynlib_load(const char *soname, const struct dynlib_sym *syms, size_t n)
{
    void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(*syms[i].fn = dlsym(lib, syms[i].name))) {
            for (size_t j = 0; j < i; j++)
                *syms[j].fn = NULL; /* nothing may point into the library once it is gone */
            dlclose(lib); /* a library without one of them is as good as none */
            return false;
        }
    return true;
}
