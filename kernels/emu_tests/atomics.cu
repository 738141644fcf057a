// Emulator fidelity: global atomics across CTAs and shared atomics within a CTA.
#include <stdint.h>

extern "C" __global__ void atomics(const uint32_t *in, uint32_t *counters, float *fsum, unsigned long long *wide, int n) {
    __shared__ uint32_t local_max;
    if (threadIdx.x == 0) local_max = 0;
    __syncthreads();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        uint32_t v = in[i];
        atomicAdd(&counters[0], v);
        atomicMax(&counters[1], v);
        atomicMin(&counters[2], v);
        atomicXor(&counters[3], v);
        atomicAdd(fsum, (float)(v & 0xff));
        atomicAdd(wide, (unsigned long long)v << 20);
        atomicMax(&local_max, v);
        // CAS loop: increment counters[4] by 3
        uint32_t old = counters[4], assumed;
        do {
            assumed = old;
            old = atomicCAS(&counters[4], assumed, assumed + 3);
        } while (old != assumed);
    }
    __syncthreads();
    if (threadIdx.x == 0) atomicAdd(&counters[5 + blockIdx.x], local_max);
}
