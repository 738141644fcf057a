/* The header compiled as C99 (-pedantic, warnings as errors) rather than C++: a C server
 * includes it too. Called by capi/tests/client.rs: returns 0 when a zero-initialised decode
 * shape plans nothing (a typed error, not a crash), a forward shape plans the compiled
 * (d_qk, d_v) pair 192 / 128 through head_dim_v and refuses 192 / 96 with a typed error, and
 * every enum value of the header has the status string the library gives it; otherwise the
 * number of the failed check. */
#include "flashmha.h"

#include <string.h>

int flashmha_capi_c_check(void) {
    flashmha_decode_shape shape;
    flashmha_decode_plan *plan = NULL;
    flashmha_shape fwd;
    flashmha_plan *fwd_plan = NULL;
    flashmha_status st;
    memset(&shape, 0, sizeof shape);
    st = flashmha_decode_plan_create(&shape, &plan);
    if (st == FLASHMHA_OK || plan != NULL) return 1;
    if (strlen(flashmha_last_error_message()) == 0) return 2;
    if (strcmp(flashmha_status_string(FLASHMHA_OK), "success") != 0) return 3;
    if (strcmp(flashmha_status_string(FLASHMHA_ERR_SHAPE), "shape error") != 0) return 4;
    if (strcmp(flashmha_version(), FLASHMHA_VERSION_STRING) != 0) return 5;
    memset(&fwd, 0, sizeof fwd);
    fwd.dtype = FLASHMHA_DTYPE_F16;
    fwd.batch = 1;
    fwd.seqlen_q = 3;
    fwd.seqlen_k = 5;
    fwd.heads_q = 2;
    fwd.heads_kv = 1;
    fwd.head_dim = 192;
    fwd.head_dim_v = 128;
    if (flashmha_plan_create(&fwd, &fwd_plan) != FLASHMHA_OK || fwd_plan == NULL) return 6;
    flashmha_plan_destroy(fwd_plan);
    fwd_plan = NULL;
    fwd.head_dim_v = 96;
    if (flashmha_plan_create(&fwd, &fwd_plan) != FLASHMHA_ERR_UNSUPPORTED || fwd_plan != NULL) return 7;
    return 0;
}
