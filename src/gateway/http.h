/* http.h - what the gateway's handlers share (argument binding lives in
 * registry/bind.h). Everything runs on an I/O thread. */
#ifndef FM_HTTP_H
#define FM_HTTP_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <jansson.h>
#include <stdbool.h>

#include "core/status.h"
#include "registry/bind.h"
#include "registry/registry.h"

#endif
