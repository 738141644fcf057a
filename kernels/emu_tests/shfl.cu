// Emulator fidelity: shfl.sync in all modes (with sub-warp widths, i.e. segment masks and
// clamps), vote.sync and match.any.sync. One warp; out has 32 entries per test.
#include <stdint.h>

extern "C" __global__ void shfl_modes(const uint32_t *in, const uint32_t *params, uint32_t *out) {
    int lane = threadIdx.x;
    uint32_t v = in[lane];
    int delta = params[0], src = params[1], xmask = params[2], width = params[3];
    out[0 * 32 + lane] = __shfl_up_sync(0xffffffffu, v, delta);
    out[1 * 32 + lane] = __shfl_down_sync(0xffffffffu, v, delta);
    out[2 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, xmask);
    out[3 * 32 + lane] = __shfl_sync(0xffffffffu, v, src);
    out[4 * 32 + lane] = __shfl_up_sync(0xffffffffu, v, delta, width);
    out[5 * 32 + lane] = __shfl_down_sync(0xffffffffu, v, delta, width);
    out[6 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, xmask, width);
    out[7 * 32 + lane] = __shfl_sync(0xffffffffu, v, src, width);
    bool p = (v & 1u) != 0;
    out[8 * 32 + lane] = __ballot_sync(0xffffffffu, p);
    out[9 * 32 + lane] = __any_sync(0xffffffffu, p);
    out[10 * 32 + lane] = __all_sync(0xffffffffu, p);
    out[11 * 32 + lane] = __match_any_sync(0xffffffffu, v & 3u);
    // a shuffle inside divergent code: only even lanes, member mask = even lanes
    uint32_t r = 0xdeadbeefu;
    if ((lane & 1) == 0) r = __shfl_sync(0x55555555u, v, (lane + 2) % 32);
    out[12 * 32 + lane] = r;
}
