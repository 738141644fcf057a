/* The header compiled as C99 (-pedantic, warnings as errors) rather than C++: a C server
 * includes it too. Called by capi/tests/client.rs: returns 0 when a zero-initialised decode
 * shape plans nothing (a typed error, not a crash) and every enum value of the header has the
 * status string the library gives it; otherwise the number of the failed check. */
#include "flashmha.h"

#include <string.h>

int flashmha_capi_c_check(void) {
    flashmha_decode_shape shape;
    flashmha_decode_plan *plan = NULL;
    flashmha_status st;
    memset(&shape, 0, sizeof shape);
    st = flashmha_decode_plan_create(&shape, &plan);
    if (st == FLASHMHA_OK || plan != NULL) return 1;
    if (strlen(flashmha_last_error_message()) == 0) return 2;
    if (strcmp(flashmha_status_string(FLASHMHA_OK), "success") != 0) return 3;
    if (strcmp(flashmha_status_string(FLASHMHA_ERR_SHAPE), "shape error") != 0) return 4;
    if (strcmp(flashmha_version(), FLASHMHA_VERSION_STRING) != 0) return 5;
    return 0;
}
