/* reader: picks the implementation of reader.h for a member. */
#include "reader.h"

const struct reader_ops *reader_for(const struct zip_member *zm)
{
    if (zm->err)
        return &reader_broken;
    if (zm->method == ZIP_METHOD_DEFLATED)
        return &reader_deflate;
    return &reader_stored;
}
