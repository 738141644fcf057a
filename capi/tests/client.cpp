// A C++ client of the flashmha C ABI (include/flashmha.h), as a server would use it. Built by
// capi/build.rs with the `cc` crate and run by capi/tests/client.rs. It runs random problems of
// every op on the emulator entry points: the forward, the paged decode and the MLA decode (with
// and without split-KV, through a shuffled block table; the forward and the paged decode also
// with d_qk != d_v through head_dim_v) against a plain CPU attention computed here in
// double on the same rounded inputs; merge_states against the identity "merging the states of
// two key halves gives the state of all keys"; the KV append bit for bit against a host
// scatter; head similarity against CPU cosines; the backward against a CPU backward in double
// from the same P. It also checks the typed errors (no GPU, bad
// buffers, bad shapes, aliasing). Returns the number of failed checks; prints each failure.
// flashmha_capi_client_cuda_main runs the forward through the CUDA path (a context, plans for
// it, flashmha_run on device memory), run by capi/tests/client_cuda.rs on the emulated CUDA
// driver.

#include "flashmha.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

// Device memory for the CUDA path, given by the test harness (capi/tests/client_cuda.rs, with the
// emulated CUDA driver in CI): this client links no CUDA library of its own.
extern "C" {
struct flashmha_client_device_memory {
    // Returns a device address of `bytes` bytes (0 on failure).
    uint64_t (*alloc)(size_t bytes);
    // Host to device and device to host copies; each returns 0 on success.
    int (*upload)(uint64_t dst, const void *src, size_t bytes);
    int (*download)(void *dst, uint64_t src, size_t bytes);
    void (*free)(uint64_t ptr);
};
}

namespace {

int failures = 0;

void fail(const std::string &what) {
    std::fprintf(stderr, "capi client: FAIL %s\n", what.c_str());
    ++failures;
}

void expect_status(flashmha_status got, flashmha_status want, const std::string &what) {
    if (got != want) {
        fail(what + ": status " + std::to_string(got) + " (" + flashmha_status_string(got) +
             "), expected " + std::to_string(want) + " (" + flashmha_status_string(want) +
             "): " + flashmha_last_error_message());
    }
}

// 16-bit encodings, round to nearest even.
uint16_t bf16_bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

float bf16_value(uint16_t b) {
    uint32_t u = static_cast<uint32_t>(b) << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

// f16 for finite values below 65504 (our data is in [-1.5, 1.5]).
uint16_t f16_bits(float x) {
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(static_cast<double>(x));
    if (a < std::ldexp(1.0, -14)) {
        // Subnormal: a multiple of 2^-24 (rounding up to 1024 yields the smallest normal).
        return sign | static_cast<uint16_t>(std::nearbyint(a * std::ldexp(1.0, 24)));
    }
    int e = 0;
    double scaled = std::nearbyint(std::frexp(a, &e) * 2048.0);  // 11 significant bits
    if (scaled == 2048.0) {
        scaled = 1024.0;
        e += 1;
    }
    const int biased = e - 1 + 15;
    return sign | static_cast<uint16_t>(biased << 10) | static_cast<uint16_t>(scaled - 1024.0);
}

float f16_value(uint16_t b) {
    const int biased = (b >> 10) & 31;
    const int frac = b & 1023;
    const double mag = biased == 0 ? std::ldexp(frac, -24) : std::ldexp(1024 + frac, biased - 25);
    return static_cast<float>((b & 0x8000) ? -mag : mag);
}

struct Dtype {
    flashmha_dtype code;
    const char *name;
    uint16_t (*bits)(float);
    float (*value)(uint16_t);
    double unit_roundoff;
};

const Dtype kBf16 = {FLASHMHA_DTYPE_BF16, "bf16", bf16_bits, bf16_value, 1.0 / 256.0};
const Dtype kF16 = {FLASHMHA_DTYPE_F16, "f16", f16_bits, f16_value, 1.0 / 2048.0};

// One problem: per-item (sq, sk), packed [rows, heads, d] tensors q, k and [rows, heads, d_v]
// tensors v, o (padded items all equal).
struct Problem {
    Dtype dtype;
    bool varlen;
    bool causal;
    size_t heads_q, heads_kv, head_dim;
    std::vector<int32_t> cu_q, cu_k;  // per-item row offsets, also for padded
    size_t head_dim_v = 0;            // d_v as the C structs take it: 0 means head_dim
    size_t dv() const { return head_dim_v == 0 ? head_dim : head_dim_v; }
    // Elements of o: [total_q, heads_q, d_v].
    size_t o_elems() const { return static_cast<size_t>(cu_q.back()) * heads_q * dv(); }
};

struct Data {
    std::vector<uint16_t> q, k, v;
    std::vector<double> qf, kf, vf;  // the rounded values
};

Data draw(const Problem &p, std::mt19937_64 &rng) {
    std::uniform_real_distribution<float> dist(-1.5f, 1.5f);
    Data d;
    auto fill = [&](std::vector<uint16_t> &bits, std::vector<double> &vals, size_t n) {
        for (size_t i = 0; i < n; ++i) {
            float x = dist(rng);
            if (x == 0.0f) x = 0.5f;  // never zeros
            bits.push_back(p.dtype.bits(x));
            vals.push_back(p.dtype.value(bits.back()));
        }
    };
    fill(d.q, d.qf, static_cast<size_t>(p.cu_q.back()) * p.heads_q * p.head_dim);
    fill(d.k, d.kf, static_cast<size_t>(p.cu_k.back()) * p.heads_kv * p.head_dim);
    fill(d.v, d.vf, static_cast<size_t>(p.cu_k.back()) * p.heads_kv * p.dv());
    return d;
}

// Index of the LSE of (item b, head h, row i): [b, hq, sq] padded, [hq, total_q] varlen.
size_t lse_index(const Problem &p, size_t b, size_t h, size_t i) {
    if (p.varlen) return h * p.cu_q.back() + p.cu_q[b] + i;
    const size_t sq = p.cu_q[1];
    return (b * p.heads_q + h) * sq + i;
}

// Plain attention in double: O [rows, hq, d_v] and LSE. With `sinks` ([hq] logits), exp(sinks[h])
// joins every row's softmax denominator of head h with no value (and the LSE includes it).
void cpu_attention(const Problem &p, const Data &d, std::vector<double> &o,
                   std::vector<double> &lse, const std::vector<double> *sinks = nullptr) {
    const size_t hq = p.heads_q, hkv = p.heads_kv, dim = p.head_dim, dv = p.dv();
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    o.assign(p.o_elems(), 0.0);
    lse.assign(static_cast<size_t>(p.cu_q.back()) * hq, 0.0);
    for (size_t b = 0; b + 1 < p.cu_q.size(); ++b) {
        const long sq = p.cu_q[b + 1] - p.cu_q[b], sk = p.cu_k[b + 1] - p.cu_k[b];
        for (size_t h = 0; h < hq; ++h) {
            const size_t kvh = h / (hq / hkv);
            for (long i = 0; i < sq; ++i) {
                const double *qr = &d.qf[((p.cu_q[b] + i) * hq + h) * dim];
                std::vector<double> s;
                double m = -INFINITY;
                for (long j = 0; j < sk; ++j) {
                    const bool masked = p.causal && j > i + sk - sq;
                    double x = -INFINITY;
                    if (!masked) {
                        const double *kr = &d.kf[((p.cu_k[b] + j) * hkv + kvh) * dim];
                        x = 0.0;
                        for (size_t c = 0; c < dim; ++c) x += qr[c] * kr[c];
                        x *= scale;
                    }
                    s.push_back(x);
                    m = std::fmax(m, x);
                }
                const double z = sinks != nullptr ? (*sinks)[h] : -INFINITY;
                m = std::fmax(m, z);
                double sum = std::isinf(z) ? 0.0 : std::exp(z - m);
                for (double &x : s) {
                    x = std::isinf(x) ? 0.0 : std::exp(x - m);
                    sum += x;
                }
                if (sum == 0.0) {
                    // Every key masked: O = 0, LSE = -inf (flashmha::AttnOptions semantics).
                    lse[lse_index(p, b, h, i)] = -INFINITY;
                    continue;
                }
                double *orow = &o[((p.cu_q[b] + i) * hq + h) * dv];
                for (long j = 0; j < sk; ++j) {
                    const double *vr = &d.vf[((p.cu_k[b] + j) * hkv + kvh) * dv];
                    for (size_t c = 0; c < dv; ++c) orow[c] += s[j] / sum * vr[c];
                }
                lse[lse_index(p, b, h, i)] = m + std::log(sum);
            }
        }
    }
}

flashmha_shape shape_of(const Problem &p) {
    flashmha_shape s;
    std::memset(&s, 0, sizeof s);  // contiguous strides, default options
    s.dtype = p.dtype.code;
    s.varlen = p.varlen ? 1 : 0;
    s.batch = p.cu_q.size() - 1;
    for (size_t b = 0; b + 1 < p.cu_q.size(); ++b) {
        s.seqlen_q = std::max<size_t>(s.seqlen_q, p.cu_q[b + 1] - p.cu_q[b]);
        s.seqlen_k = std::max<size_t>(s.seqlen_k, p.cu_k[b + 1] - p.cu_k[b]);
    }
    s.total_q = p.cu_q.back();
    s.total_k = p.cu_k.back();
    s.heads_q = p.heads_q;
    s.heads_kv = p.heads_kv;
    s.head_dim = p.head_dim;
    s.head_dim_v = p.head_dim_v;
    s.options.causal = p.causal ? 1 : 0;
    return s;
}

flashmha_buf buf(void *data, size_t len) {
    flashmha_buf b;
    b.data = data;
    b.len = len;
    return b;
}

// The whole of `v` as a buffer.
template <class T>
flashmha_buf buf(std::vector<T> &v) {
    return buf(v.data(), v.size());
}

void check_close(const std::string &what, double err, double tol) {
    if (!(err <= tol)) {
        fail(what + ": max error " + std::to_string(err) + " > " + std::to_string(tol));
    }
}

// Largest |a[i] - b[i]| (NaN anywhere gives NaN, which fails every `<=` check).
template <class A, class B>
double max_err(const A &a, const B &b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const double err = std::fabs(static_cast<double>(a(i)) - static_cast<double>(b(i)));
        if (!(err <= worst)) worst = err;
    }
    return worst;
}

// The O tolerance: P is rounded to the dtype for the P.V product and O to the dtype on output,
// each a relative error of at most u on values bounded by max|v| = 1.5; 4u covers both with
// margin (a split merge adds only an f32 rescale per split).
double o_tolerance(const Problem &p) { return 4.0 * p.dtype.unit_roundoff * 1.5; }

// Checks O (`o_tolerance`) and LSE of `p` on inputs `d` against the CPU attention and returns
// the worst errors. LSE: scores are f32 dot products of 16-bit values (|s| <= 18 here); 1e-3 is
// far above f32 accumulation error and far below any mistake in masking or scaling; a row
// masked in both (the same infinity) is exact.
// `o_dim` (0: d_v) is the width of o's rows: the first o_dim columns of each reference row
// (MLA: the value is the first 512 of the 576 key dims).
std::pair<double, double> check_against_cpu(const std::string &name, const Problem &p,
                                            const Data &d, const std::vector<uint16_t> &o,
                                            const std::vector<float> &lse, size_t o_dim = 0) {
    std::vector<double> ref_o, ref_lse;
    cpu_attention(p, d, ref_o, ref_lse);
    const size_t w = o_dim == 0 ? p.dv() : o_dim;
    const double err_o =
        max_err([&](size_t i) { return p.dtype.value(o[i]); },
                [&](size_t i) { return ref_o[i / w * p.dv() + i % w]; }, o.size());
    check_close(name + " O", err_o, o_tolerance(p));
    double err_lse = 0.0;
    for (size_t i = 0; i < lse.size(); ++i) {
        const bool both_masked = std::isinf(ref_lse[i]) && lse[i] == ref_lse[i];
        const double err = both_masked ? 0.0 : std::fabs(lse[i] - ref_lse[i]);
        if (!(err <= err_lse)) err_lse = err;  // NaN propagates
    }
    check_close(name + " LSE", err_lse, 1e-3);
    return {err_o, err_lse};
}

// Runs `p` through a plan handle (or the one-call entry point) and checks O and LSE.
// A host buffer's copy in device memory (freed with the object), as a flashmha_buf.
struct DeviceCopy {
    const flashmha_client_device_memory *mem;
    uint64_t ptr = 0;
    size_t len = 0;
    DeviceCopy(const flashmha_client_device_memory *m, const flashmha_buf &host, size_t elem)
        : mem(m), len(host.len) {
        if (host.data == nullptr) return;
        ptr = mem->alloc(host.len * elem);
        if (ptr == 0 || mem->upload(ptr, host.data, host.len * elem) != 0) {
            fail("device allocation or upload");
        }
    }
    DeviceCopy(const DeviceCopy &) = delete;
    DeviceCopy &operator=(const DeviceCopy &) = delete;
    ~DeviceCopy() {
        if (ptr != 0) mem->free(ptr);
    }
    flashmha_buf dev() const { return buf(reinterpret_cast<void *>(ptr), len); }
    void back(const flashmha_buf &host, size_t elem) const {
        if (ptr != 0 && mem->download(host.data, ptr, host.len * elem) != 0) fail("download");
    }
};

// Runs `plan` with `bufs` on the GPU path: device copies, flashmha_run on the legacy stream of
// `ctx`, O and the LSE copied back into the host buffers.
flashmha_status run_on_gpu(const flashmha_context *ctx, const flashmha_plan *plan,
                           const flashmha_bufs &bufs, const flashmha_client_device_memory *mem) {
    const DeviceCopy q(mem, bufs.q, 2), k(mem, bufs.k, 2), v(mem, bufs.v, 2), o(mem, bufs.o, 2),
        lse(mem, bufs.lse, 4), cu_q(mem, bufs.cu_seqlens_q, 4), cu_k(mem, bufs.cu_seqlens_k, 4);
    flashmha_bufs dev;
    std::memset(&dev, 0, sizeof dev);
    dev.q = q.dev();
    dev.k = k.dev();
    dev.v = v.dev();
    dev.o = o.dev();
    dev.lse = lse.dev();
    dev.cu_seqlens_q = cu_q.dev();
    dev.cu_seqlens_k = cu_k.dev();
    const flashmha_status st = flashmha_run(ctx, plan, &dev, nullptr);
    if (st == FLASHMHA_OK) {
        o.back(bufs.o, 2);
        lse.back(bufs.lse, 4);
    }
    return st;
}

// Runs `p` on the emulator entry points, or (with `gpu`, a context and its device memory) on
// the GPU path, and checks it against the CPU reference.
void check_problem(const Problem &p, bool one_call, std::mt19937_64 &rng,
                   const flashmha_context *ctx = nullptr,
                   const flashmha_client_device_memory *gpu = nullptr) {
    const std::string name = std::string(p.dtype.name) + (p.varlen ? " varlen" : " padded") +
                             (p.causal ? " causal" : "") + " hq" + std::to_string(p.heads_q) +
                             "/hkv" + std::to_string(p.heads_kv) + " d" +
                             std::to_string(p.head_dim) + "/" + std::to_string(p.dv()) +
                             (one_call ? " (one call)" : " (plan)");
    Data d = draw(p, rng);
    std::vector<uint16_t> o(p.o_elems(), 0);
    std::vector<float> lse(static_cast<size_t>(p.cu_q.back()) * p.heads_q, 0.0f);
    std::vector<int32_t> cu_q = p.cu_q, cu_k = p.cu_k;
    flashmha_bufs bufs;
    std::memset(&bufs, 0, sizeof bufs);
    bufs.q = buf(d.q);
    bufs.k = buf(d.k);
    bufs.v = buf(d.v);
    bufs.o = buf(o);
    bufs.lse = buf(lse);
    if (p.varlen) {
        bufs.cu_seqlens_q = buf(cu_q);
        bufs.cu_seqlens_k = buf(cu_k);
    }
    const flashmha_shape shape = shape_of(p);
    flashmha_status st;
    if (gpu != nullptr) {
        flashmha_plan *plan = nullptr;
        expect_status(flashmha_plan_create_for_context(ctx, &shape, &plan), FLASHMHA_OK,
                      name + " plan for the context");
        st = run_on_gpu(ctx, plan, bufs, gpu);
        flashmha_plan_destroy(plan);
    } else if (one_call) {
        st = flashmha_emulate_forward(&shape, &bufs);
    } else {
        flashmha_plan *plan = nullptr;
        expect_status(flashmha_plan_create(&shape, &plan), FLASHMHA_OK, name + " plan");
        st = flashmha_emulate_run(plan, &bufs);
        flashmha_plan_destroy(plan);
    }
    expect_status(st, FLASHMHA_OK, name + " run");
    if (st != FLASHMHA_OK) return;

    const auto [worst_o, worst_lse] = check_against_cpu(name, p, d, o, lse);
    const double tol_o = o_tolerance(p);
    std::printf("capi client: %s: max |O - ref| %.3g (tol %.3g), max |LSE - ref| %.3g\n",
                name.c_str(), worst_o, tol_o, worst_lse);
}

// The backward of `p` for the output gradient dO (`dof`, laid out like q) in double on the
// same rounded inputs, from the explicit P of cpu_attention's softmax: dV_j = sum_i P_ij dO_i,
// dS_ij = P_ij (dO_i.v_j - D_i) with D_i = dO_i.O_i, dQ_i = scale sum_j dS_ij k_j,
// dK_j = scale sum_i dS_ij q_i (GQA: dK, dV summed over a group's query heads). Also the
// per-element tolerances of the kernels' result: P and dS are rounded to the dtype before their
// products (u relative each), O (hence D) has the forward's error (o_tolerance per element, so
// |dD_i| <= sum_c |dO_ic| o_tol), and each gradient is rounded to the dtype on output (u); every
// f32 accumulation error is far below these. The tolerances are twice the sum of those terms.
struct Grads {
    std::vector<double> dq, dk, dv, tq, tk, tv;
};

Grads cpu_backward(const Problem &p, const Data &d, const std::vector<double> &dof,
                   const std::vector<double> &sinks) {
    const size_t hq = p.heads_q, hkv = p.heads_kv, dim = p.head_dim;
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    const double u = p.dtype.unit_roundoff, o_tol = o_tolerance(p);
    std::vector<double> o, lse;
    cpu_attention(p, d, o, lse, &sinks);
    Grads g;
    g.dq.assign(d.qf.size(), 0.0);
    g.tq.assign(d.qf.size(), 0.0);
    g.dk.assign(d.kf.size(), 0.0);
    g.tk.assign(d.kf.size(), 0.0);
    g.dv.assign(d.vf.size(), 0.0);
    g.tv.assign(d.vf.size(), 0.0);
    for (size_t b = 0; b + 1 < p.cu_q.size(); ++b) {
        const long sq = p.cu_q[b + 1] - p.cu_q[b], sk = p.cu_k[b + 1] - p.cu_k[b];
        for (size_t h = 0; h < hq; ++h) {
            const size_t kvh = h / (hq / hkv);
            for (long i = 0; i < sq; ++i) {
                const double l = lse[lse_index(p, b, h, i)];
                if (std::isinf(l)) continue;  // no visible key: no gradient
                const size_t qi = ((p.cu_q[b] + i) * hq + h) * dim;
                double dd = 0.0, dd_err = 0.0;
                for (size_t c = 0; c < dim; ++c) {
                    dd += dof[qi + c] * o[qi + c];
                    dd_err += std::fabs(dof[qi + c]) * o_tol;
                }
                for (long j = 0; j < sk; ++j) {
                    if (p.causal && j > i + sk - sq) continue;
                    const size_t kj = ((p.cu_k[b] + j) * hkv + kvh) * dim;
                    double s = 0.0, dp = 0.0;
                    for (size_t c = 0; c < dim; ++c) {
                        s += d.qf[qi + c] * d.kf[kj + c];
                        dp += dof[qi + c] * d.vf[kj + c];
                    }
                    const double pij = std::exp(s * scale - l);
                    const double ds = pij * (dp - dd);
                    const double ds_err = u * std::fabs(ds) + pij * dd_err;
                    for (size_t c = 0; c < dim; ++c) {
                        g.dv[kj + c] += pij * dof[qi + c];
                        g.tv[kj + c] += u * pij * std::fabs(dof[qi + c]);
                        g.dq[qi + c] += scale * ds * d.kf[kj + c];
                        g.tq[qi + c] += scale * ds_err * std::fabs(d.kf[kj + c]);
                        g.dk[kj + c] += scale * ds * d.qf[qi + c];
                        g.tk[kj + c] += scale * ds_err * std::fabs(d.qf[qi + c]);
                    }
                }
            }
        }
    }
    for (auto [x, t] : {std::pair{&g.dq, &g.tq}, {&g.dk, &g.tk}, {&g.dv, &g.tv}}) {
        for (size_t i = 0; i < x->size(); ++i) (*t)[i] = 2.0 * ((*t)[i] + u * std::fabs((*x)[i]));
    }
    return g;
}

// d(sink) of every head in double: -sum over its rows i of P_sink_i D_i, P_sink_i =
// exp(z_h - L_i), D_i = dO_i . O_i, from cpu_attention's O and LSE; and its tolerance: D_i off
// by sum_c |dO_ic| o_tol (the forward's O error), P_sink_i off by |exp(z_h - lse_i) - P_sink_i|
// with the kernel's own LSE, the f32 sum over all rows (and the dot over d) relatively by
// (rows + d + 64) 2^-24; twice the sum of those terms, as cpu_backward's tolerances.
void cpu_sink_grads(const Problem &p, const Data &d, const std::vector<double> &dof,
                    const std::vector<double> &sinks, const std::vector<float> &kernel_lse,
                    std::vector<double> &dz, std::vector<double> &tz) {
    const size_t hq = p.heads_q, dim = p.head_dim;
    const double o_tol = o_tolerance(p);
    const double f32_terms =
        std::ldexp(static_cast<double>(p.cu_q.back()) + static_cast<double>(dim) + 64.0, -24);
    std::vector<double> o, lse;
    cpu_attention(p, d, o, lse, &sinks);
    dz.assign(hq, 0.0);
    tz.assign(hq, 0.0);
    for (size_t b = 0; b + 1 < p.cu_q.size(); ++b) {
        const long sq = p.cu_q[b + 1] - p.cu_q[b];
        for (size_t h = 0; h < hq; ++h) {
            for (long i = 0; i < sq; ++i) {
                const size_t li = lse_index(p, b, h, i);
                const size_t qi = ((p.cu_q[b] + i) * hq + h) * dim;
                double dd = 0.0, dd_err = 0.0, dd_abs = 0.0;
                for (size_t c = 0; c < dim; ++c) {
                    dd += dof[qi + c] * o[qi + c];
                    dd_err += std::fabs(dof[qi + c]) * o_tol;
                    dd_abs += std::fabs(dof[qi + c] * o[qi + c]);
                }
                const double ps = std::exp(sinks[h] - lse[li]);
                const double ps_err = std::fabs(std::exp(sinks[h] - kernel_lse[li]) - ps);
                dz[h] -= ps * dd;
                tz[h] += ps * dd_err + ps_err * (std::fabs(dd) + dd_err) + f32_terms * ps * dd_abs;
            }
        }
    }
    for (double &t : tz) t *= 2.0;
}

// The backward through the C ABI (flashmha_bwd_plan_create, flashmha_emulate_bwd_run) of a
// random problem with attention sinks whose O and LSE come from the forward entry point,
// against cpu_backward and cpu_sink_grads; then a short dk buffer is FLASHMHA_ERR_BUFFER with
// nothing written.
void check_backward(const Problem &p, std::mt19937_64 &rng) {
    const std::string name = std::string("backward ") + p.dtype.name +
                             (p.varlen ? " varlen" : " padded") + (p.causal ? " causal" : "") +
                             " hq" + std::to_string(p.heads_q) + "/hkv" +
                             std::to_string(p.heads_kv);
    Data d = draw(p, rng);
    std::vector<uint16_t> o(d.q.size(), 0), d_o;
    std::vector<double> dof;
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (size_t i = 0; i < d.q.size(); ++i) {
        d_o.push_back(p.dtype.bits(dist(rng)));
        dof.push_back(p.dtype.value(d_o.back()));
    }
    std::vector<float> lse(static_cast<size_t>(p.cu_q.back()) * p.heads_q, 0.0f);
    std::vector<int32_t> cu_q = p.cu_q, cu_k = p.cu_k;
    // Sink logits around the rows' log-sum-exp (P_sink neither 0 nor 1).
    std::uniform_real_distribution<float> sink_dist(-1.0f, 3.0f);
    std::vector<float> sinks(p.heads_q), d_sinks(p.heads_q, NAN);
    for (float &z : sinks) z = sink_dist(rng);
    const std::vector<double> sinks_f(sinks.begin(), sinks.end());
    flashmha_bufs fb;
    std::memset(&fb, 0, sizeof fb);
    fb.q = buf(d.q);
    fb.k = buf(d.k);
    fb.v = buf(d.v);
    fb.o = buf(o);
    fb.lse = buf(lse);
    fb.sinks = buf(sinks);
    if (p.varlen) {
        fb.cu_seqlens_q = buf(cu_q);
        fb.cu_seqlens_k = buf(cu_k);
    }
    flashmha_bwd_shape shape;
    std::memset(&shape, 0, sizeof shape);
    shape.fwd = shape_of(p);
    expect_status(flashmha_emulate_forward(&shape.fwd, &fb), FLASHMHA_OK, name + " forward");
    flashmha_bwd_plan *plan = nullptr;
    expect_status(flashmha_bwd_plan_create(&shape, &plan), FLASHMHA_OK, name + " plan");
    size_t ws_len = 0;
    expect_status(flashmha_bwd_plan_workspace_len(plan, &ws_len), FLASHMHA_OK, name + " ws");
    // Outputs poisoned with NaN: an element the kernels do not write fails the comparison.
    const uint16_t nan = 0x7e00;
    std::vector<uint16_t> dq(d.q.size(), nan), dk(d.k.size(), nan), dv(d.v.size(), nan);
    std::vector<float> ws(ws_len, NAN);
    flashmha_bwd_bufs bb;
    std::memset(&bb, 0, sizeof bb);
    bb.q = fb.q;
    bb.k = fb.k;
    bb.v = fb.v;
    bb.o = fb.o;
    bb.lse = fb.lse;
    bb.d_o = buf(d_o);
    bb.dq = buf(dq);
    bb.dk = buf(dk);
    bb.dv = buf(dv);
    bb.workspace = buf(ws);
    bb.cu_seqlens_q = fb.cu_seqlens_q;
    bb.cu_seqlens_k = fb.cu_seqlens_k;
    bb.sinks = fb.sinks;
    bb.d_sinks = buf(d_sinks);
    flashmha_bwd_bufs short_dk = bb;
    short_dk.dk.len -= 1;
    expect_status(flashmha_emulate_bwd_run(plan, &short_dk), FLASHMHA_ERR_BUFFER,
                  name + " short dk");
    if (std::any_of(dk.begin(), dk.end(), [&](uint16_t x) { return x != nan; })) {
        fail(name + ": a refused run wrote dk");
    }
    const flashmha_status st = flashmha_emulate_bwd_run(plan, &bb);
    flashmha_bwd_plan_destroy(plan);
    expect_status(st, FLASHMHA_OK, name + " run");
    if (st != FLASHMHA_OK) return;
    const Grads g = cpu_backward(p, d, dof, sinks_f);
    double worst = 0.0;
    std::vector<double> dz, tz;
    cpu_sink_grads(p, d, dof, sinks_f, lse, dz, tz);
    for (size_t h = 0; h < p.heads_q; ++h) {
        const double err = std::fabs(d_sinks[h] - dz[h]);
        if (!(err <= tz[h])) {
            fail(name + ": d_sinks[" + std::to_string(h) + "] " + std::to_string(d_sinks[h]) +
                 " vs " + std::to_string(dz[h]) + " (tol " + std::to_string(tz[h]) + ")");
            return;
        }
        if (tz[h] > 0.0) worst = std::max(worst, err / tz[h]);
    }
    const std::pair<const std::vector<uint16_t> *, std::pair<const std::vector<double> *,
                                                            const std::vector<double> *>>
        outs[] = {{&dq, {&g.dq, &g.tq}}, {&dk, {&g.dk, &g.tk}}, {&dv, {&g.dv, &g.tv}}};
    for (const auto &[got, ref] : outs) {
        for (size_t i = 0; i < got->size(); ++i) {
            const double err = std::fabs(p.dtype.value((*got)[i]) - (*ref.first)[i]);
            const double ratio = err / (*ref.second)[i];
            if (!(err <= (*ref.second)[i])) {
                fail(name + ": element " + std::to_string(i) + " off by " + std::to_string(err) +
                     " > " + std::to_string((*ref.second)[i]));
                return;
            }
            if (ratio > worst) worst = ratio;
        }
    }
    std::printf("capi client: %s: worst |grad - ref| / tol %.3g\n", name.c_str(), worst);
}

std::vector<int32_t> offsets(const std::vector<int> &lens) {
    std::vector<int32_t> cu{0};
    for (int n : lens) cu.push_back(cu.back() + n);
    return cu;
}

void check_errors() {
    // No GPU here: creating a context is the typed no-driver error, with a message.
    flashmha_context *ctx = nullptr;
    const flashmha_status st = flashmha_context_create(0, &ctx);
    expect_status(st, FLASHMHA_ERR_NO_CUDA_DRIVER, "context without a driver");
    if (ctx != nullptr) fail("a context was returned without a driver");
    if (std::strstr(flashmha_last_error_message(), "driver") == nullptr) {
        fail(std::string("no-driver message: ") + flashmha_last_error_message());
    }

    // A bad shape: 3 query heads over 2 kv heads.
    Problem p{kBf16, false, false, 3, 2, 64, {0, 4}, {0, 4}};
    flashmha_shape shape = shape_of(p);
    flashmha_plan *plan = nullptr;
    expect_status(flashmha_plan_create(&shape, &plan), FLASHMHA_ERR_SHAPE, "heads 3/2");
    if (plan != nullptr) fail("a plan was returned for a bad shape");
    // An unsupported head dim.
    shape = shape_of(Problem{kBf16, false, false, 2, 2, 20, {0, 4}, {0, 4}});
    expect_status(flashmha_plan_create(&shape, &plan), FLASHMHA_ERR_UNSUPPORTED, "head dim 20 (not a multiple of 8)");
    // A NULL argument.
    expect_status(flashmha_plan_create(nullptr, &plan), FLASHMHA_ERR_INVALID_ARGUMENT,
                  "NULL shape");
    // Planning for a context needs a live context: NULL is an invalid argument, not a crash.
    shape = shape_of(Problem{kF16, false, false, 2, 2, 64, {0, 4}, {0, 4}});
    expect_status(flashmha_plan_create_for_context(nullptr, &shape, &plan),
                  FLASHMHA_ERR_INVALID_ARGUMENT, "plan for a NULL context");
    if (plan != nullptr) fail("a plan was returned for a NULL context");

    // A buffer one element short of what the plan needs: caught by bind, before the kernel.
    p.heads_q = 2;
    shape = shape_of(p);
    expect_status(flashmha_plan_create(&shape, &plan), FLASHMHA_OK, "plan 2/2");
    std::vector<uint16_t> q(4 * 2 * 64, bf16_bits(0.25f)), k = q, v = q, o(q.size());
    flashmha_bufs bufs;
    std::memset(&bufs, 0, sizeof bufs);
    bufs.q = buf(q);
    bufs.k = buf(k.data(), k.size() - 1);
    bufs.v = buf(v);
    bufs.o = buf(o);
    expect_status(flashmha_emulate_run(plan, &bufs), FLASHMHA_ERR_BUFFER, "short k");
    if (std::strstr(flashmha_last_error_message(), "k needs") == nullptr) {
        fail(std::string("short-k message: ") + flashmha_last_error_message());
    }
    bufs.k.len = k.size();
    // o aliasing q: the GPU path's rule holds on the emulator too, and q is left as it was.
    bufs.o = bufs.q;
    const std::vector<uint16_t> q_before = q;
    expect_status(flashmha_emulate_run(plan, &bufs), FLASHMHA_ERR_BUFFER, "o aliasing q");
    if (q != q_before) fail("a rejected forward wrote q");
    bufs.o = buf(o);
    // cu_seqlens with a padded plan.
    std::vector<int32_t> cu{0, 4};
    bufs.cu_seqlens_q = buf(cu);
    bufs.cu_seqlens_k = buf(cu);
    expect_status(flashmha_emulate_run(plan, &bufs), FLASHMHA_ERR_BUFFER, "unexpected cu_seqlens");
    // The raw GPU path rejects a missing context before touching anything.
    expect_status(flashmha_run(nullptr, plan, &bufs, nullptr), FLASHMHA_ERR_INVALID_ARGUMENT,
                  "run without a context");
    flashmha_plan_destroy(plan);
}

// ---- Paged decode ------------------------------------------------------------------------

// The K/V of `p` (packed [total_k, hkv, d] per item, as `draw` makes them) scattered into a
// pool of shuffled pages through a block table; unused slots hold non-zero filler.
struct Paged {
    size_t page_size, num_pages, max_pages;
    std::vector<uint16_t> k, v;      // NHD [num_pages, page_size, hkv, d] (v: d_v)
    std::vector<int32_t> table;      // [batch, max_pages]
    std::vector<int32_t> cache_lens;  // [batch]
};

Paged paginate(const Problem &p, const Data &d, size_t page_size, std::mt19937_64 &rng) {
    Paged g;
    g.page_size = page_size;
    const size_t batch = p.cu_k.size() - 1, row = p.heads_kv * p.head_dim,
                 row_v = p.heads_kv * p.dv();
    g.max_pages = 0;
    size_t used = 0;
    for (size_t b = 0; b < batch; ++b) {
        const size_t sk = static_cast<size_t>(p.cu_k[b + 1] - p.cu_k[b]);
        const size_t pages = (sk + page_size - 1) / page_size;
        g.max_pages = std::max(g.max_pages, pages);
        used += pages;
        g.cache_lens.push_back(static_cast<int32_t>(sk));
    }
    g.num_pages = used + 3;  // spare pages nobody references
    std::vector<int32_t> order(g.num_pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    g.k.assign(g.num_pages * page_size * row, p.dtype.bits(0.75f));
    g.v.assign(g.num_pages * page_size * row_v, p.dtype.bits(0.75f));
    g.table.assign(batch * g.max_pages, 0);
    size_t next = 0;
    for (size_t b = 0; b < batch; ++b) {
        const size_t sk = static_cast<size_t>(g.cache_lens[b]);
        for (size_t j = 0; j < sk; ++j) {
            if (j % page_size == 0) g.table[b * g.max_pages + j / page_size] = order[next++];
            const size_t page = static_cast<size_t>(g.table[b * g.max_pages + j / page_size]);
            const size_t slot = page * page_size + j % page_size;
            const size_t key = static_cast<size_t>(p.cu_k[b]) + j;
            std::copy_n(&d.k[key * row], row, &g.k[slot * row]);
            std::copy_n(&d.v[key * row_v], row_v, &g.v[slot * row_v]);
        }
    }
    return g;
}

flashmha_decode_shape decode_shape_of(const Problem &p, const Paged &g) {
    flashmha_decode_shape s;
    std::memset(&s, 0, sizeof s);  // contiguous q/o, NHD pages, default options
    s.dtype = p.dtype.code;
    s.varlen = p.varlen ? 1 : 0;
    s.batch = p.cu_q.size() - 1;
    for (size_t b = 0; b + 1 < p.cu_q.size(); ++b) {
        s.seqlen_q = std::max<size_t>(s.seqlen_q, p.cu_q[b + 1] - p.cu_q[b]);
    }
    s.total_q = p.cu_q.back();
    s.heads_q = p.heads_q;
    s.heads_kv = p.heads_kv;
    s.head_dim = p.head_dim;
    s.head_dim_v = p.head_dim_v;
    s.num_pages = g.num_pages;
    s.page_size = g.page_size;
    s.max_pages_per_seq = g.max_pages;
    s.options.causal = p.causal ? 1 : 0;
    s.lse = 1;
    s.split_mode = FLASHMHA_SPLIT_COUNT;
    s.split_value = 1;
    return s;
}

// The host buffers of one decode of `p` from the pages of `g`, over pools of `Code` elements
// (the problem's 16-bit values, or FP8 codes).
template <class Code>
struct DecodeHost {
    std::vector<uint16_t> q, o;                 // [total_q, hq, d], [total_q, hq, d_v]
    std::vector<Code> k, v;                     // NHD [num_pages, page_size, hkv, d / d_v]
    std::vector<int32_t> table, lens, cu_q;     // [batch, max_pages], [batch], [batch + 1]
    std::vector<float> lse;                     // [hq, total_q]
    DecodeHost(const Problem &p, const Data &d, const Paged &g, std::vector<Code> k_pool,
               std::vector<Code> v_pool)
        : q(d.q), o(p.o_elems(), 0), k(std::move(k_pool)), v(std::move(v_pool)), table(g.table),
          lens(g.cache_lens), cu_q(p.cu_q),
          lse(static_cast<size_t>(p.cu_q.back()) * p.heads_q, 0.0f) {}
    // Everything but the workspace and the FP8 scales.
    flashmha_decode_bufs bufs(bool varlen) {
        flashmha_decode_bufs b;
        std::memset(&b, 0, sizeof b);
        b.q = buf(q);
        b.k_cache = buf(k);
        b.v_cache = buf(v);
        b.o = buf(o);
        b.block_table = buf(table);
        b.cache_seqlens = buf(lens);
        if (varlen) b.cu_seqlens_q = buf(cu_q);
        b.lse = buf(lse);
        return b;
    }
};

// Decodes `p` (new tokens = q rows, cache = its keys) from pages with `splits` splits and
// checks O and LSE against the CPU attention.
void check_decode(const Problem &p, size_t page_size, uint32_t splits, std::mt19937_64 &rng) {
    const std::string name = std::string("decode ") + p.dtype.name +
                             (p.varlen ? " varlen" : " padded") + (p.causal ? " causal" : "") +
                             " hq" + std::to_string(p.heads_q) + "/hkv" +
                             std::to_string(p.heads_kv) + " d" + std::to_string(p.head_dim) +
                             "/" + std::to_string(p.dv()) + " page " +
                             std::to_string(page_size) + " splits " + std::to_string(splits);
    const Data d = draw(p, rng);
    const Paged g = paginate(p, d, page_size, rng);
    flashmha_decode_shape shape = decode_shape_of(p, g);
    shape.split_value = splits;
    flashmha_decode_plan *plan = nullptr;
    expect_status(flashmha_decode_plan_create(&shape, &plan), FLASHMHA_OK, name + " plan");
    if (plan == nullptr) return;
    flashmha_decode_info info;
    expect_status(flashmha_decode_plan_info(plan, &info), FLASHMHA_OK, name + " info");
    if (info.num_splits != splits) {
        fail(name + ": " + std::to_string(info.num_splits) + " splits planned");
    }
    // One split needs no workspace; more need partial O (d_v wide) and LSE of every split.
    const size_t states = splits * static_cast<size_t>(p.cu_q.back()) * p.heads_q;
    const size_t want_ws = splits == 1 ? 0 : states * (p.dv() + 1);
    if (info.workspace_elems != want_ws || info.workspace_bytes != 4 * want_ws) {
        fail(name + ": workspace " + std::to_string(info.workspace_elems) + " f32, expected " +
             std::to_string(want_ws));
    }
    DecodeHost<uint16_t> h(p, d, g, g.k, g.v);
    std::vector<float> ws(info.workspace_elems + 1, 0.0f);
    flashmha_decode_bufs bufs = h.bufs(p.varlen);
    if (info.workspace_elems > 0) {
        // One element short of what the plan states: rejected before anything runs.
        bufs.workspace = buf(ws.data(), info.workspace_elems - 1);
        expect_status(flashmha_emulate_decode_run(plan, &bufs), FLASHMHA_ERR_BUFFER,
                      name + " short workspace");
        if (std::any_of(h.o.begin(), h.o.end(), [](uint16_t x) { return x != 0; })) {
            fail(name + ": a rejected run wrote o");
        }
        bufs.workspace = buf(ws.data(), info.workspace_elems);
    }
    const flashmha_status st = flashmha_emulate_decode_run(plan, &bufs);
    expect_status(st, FLASHMHA_OK, name + " run");
    flashmha_decode_plan_destroy(plan);
    if (st != FLASHMHA_OK) return;
    if (h.k != g.k || h.v != g.v || h.q != d.q) fail(name + ": an input was written");
    const auto [err_o, err_lse] = check_against_cpu(name, p, d, h.o, h.lse);
    std::printf("capi client: %s: max |O - ref| %.3g, max |LSE - ref| %.3g\n", name.c_str(),
                err_o, err_lse);
}

// ---- KV append ---------------------------------------------------------------------------

// Appends random rows into random pools through slots or positions and compares the pools
// bit for bit with the same scatter done here.
void check_append(const Dtype &dt, bool by_position, std::mt19937_64 &rng) {
    const std::string name = std::string("kv_append ") + dt.name +
                             (by_position ? " positions" : " slots");
    const size_t hkv = 2, dim = 64, page_size = 1 + rng() % 8, batch = 2, max_pages = 4;
    const size_t num_pages = batch * max_pages + 2, row = hkv * dim;
    std::uniform_real_distribution<float> dist(-1.5f, 1.5f);
    auto fill = [&](size_t n) {
        std::vector<uint16_t> x(n);
        for (auto &e : x) {
            const float f = dist(rng);
            e = dt.bits(f == 0.0f ? 0.5f : f);  // never zeros
        }
        return x;
    };
    const std::vector<uint16_t> k0 = fill(num_pages * page_size * row), v0 = fill(k0.size());
    const size_t tokens = 1 + rng() % 6;
    const std::vector<uint16_t> k_new = fill(tokens * row), v_new = fill(tokens * row);
    // Distinct destinations: a shuffled block table, then per token (item, position).
    std::vector<int32_t> table(batch * max_pages);
    std::iota(table.begin(), table.end(), 1);
    std::shuffle(table.begin(), table.end(), rng);
    std::vector<int32_t> token_batch, token_pos, slots;
    std::vector<size_t> positions(batch * max_pages * page_size);
    std::iota(positions.begin(), positions.end(), 0);
    std::shuffle(positions.begin(), positions.end(), rng);
    for (size_t t = 0; t < tokens; ++t) {
        const size_t b = positions[t] / (max_pages * page_size);
        const size_t pos = positions[t] % (max_pages * page_size);
        const bool skip = t == 0 && tokens > 1;  // a negative index skips the token
        token_batch.push_back(static_cast<int32_t>(b));
        token_pos.push_back(skip ? -1 : static_cast<int32_t>(pos));
        const size_t page = static_cast<size_t>(table[b * max_pages + pos / page_size]);
        slots.push_back(skip ? -1 : static_cast<int32_t>(page * page_size + pos % page_size));
    }
    std::vector<uint16_t> want_k = k0, want_v = v0;
    for (size_t t = 0; t < tokens; ++t) {
        if (slots[t] < 0) continue;
        std::copy_n(&k_new[t * row], row, &want_k[static_cast<size_t>(slots[t]) * row]);
        std::copy_n(&v_new[t * row], row, &want_v[static_cast<size_t>(slots[t]) * row]);
    }

    flashmha_decode_shape pools;
    std::memset(&pools, 0, sizeof pools);
    pools.dtype = dt.code;
    pools.batch = batch;
    pools.seqlen_q = 1;
    pools.heads_q = hkv;
    pools.heads_kv = hkv;
    pools.head_dim = dim;
    pools.num_pages = num_pages;
    pools.page_size = page_size;
    pools.max_pages_per_seq = max_pages;
    flashmha_kv_append_plan *plan = nullptr;
    const flashmha_append_index index =
        by_position ? FLASHMHA_APPEND_POSITIONS : FLASHMHA_APPEND_SLOTS;
    expect_status(flashmha_kv_append_plan_create(&pools, tokens, index, &plan), FLASHMHA_OK,
                  name + " plan");
    if (plan == nullptr) return;
    std::vector<uint16_t> k = k0, v = v0;
    flashmha_kv_append_bufs bufs;
    std::memset(&bufs, 0, sizeof bufs);
    bufs.k_new = buf(const_cast<uint16_t *>(k_new.data()), k_new.size());
    bufs.v_new = buf(const_cast<uint16_t *>(v_new.data()), v_new.size());
    bufs.k_cache = buf(k);
    bufs.v_cache = buf(v);
    if (by_position) {
        bufs.block_table = buf(table);
        bufs.token_batch = buf(token_batch);
        bufs.token_pos = buf(token_pos);
    } else {
        bufs.slot_mapping = buf(slots);
    }
    // The other kind of index is missing: rejected, pools untouched.
    flashmha_kv_append_bufs wrong = bufs;
    std::memset(&wrong.slot_mapping, 0, sizeof wrong.slot_mapping);
    std::memset(&wrong.token_pos, 0, sizeof wrong.token_pos);
    expect_status(flashmha_emulate_kv_append_run(plan, &wrong), FLASHMHA_ERR_BUFFER,
                  name + " without its index");
    if (k != k0 || v != v0) fail(name + ": a rejected append wrote the pools");
    expect_status(flashmha_emulate_kv_append_run(plan, &bufs), FLASHMHA_OK, name + " run");
    flashmha_kv_append_plan_destroy(plan);
    if (k != want_k) fail(name + ": k pool differs from the host scatter");
    if (v != want_v) fail(name + ": v pool differs from the host scatter");
    std::printf("capi client: %s: %zu tokens into %zu pages of %zu, bit-exact\n", name.c_str(),
                tokens, num_pages, page_size);
}

// ---- MLA decode ---------------------------------------------------------------------------

// MLA decode of `p` (one latent KV head of 576 dims; heads_q query heads) from a shuffled page
// pool with `splits` splits: the value is the first 512 dims of each cached key row, so the
// reference is the CPU attention with v = k, O compared on its first 512 columns. Also checks
// the plan's workspace, a short o and a short workspace (FLASHMHA_ERR_BUFFER, nothing written)
// and that no input is written.
void check_mla_decode(Problem p, size_t page_size, uint32_t splits, std::mt19937_64 &rng) {
    p.heads_kv = 1;
    p.head_dim = FLASHMHA_MLA_DIM_QK;
    const std::string name = std::string("mla decode ") + p.dtype.name +
                             (p.varlen ? " varlen" : " padded") + (p.causal ? " causal" : "") +
                             " hq" + std::to_string(p.heads_q) + " page " +
                             std::to_string(page_size) + " splits " + std::to_string(splits);
    Data d = draw(p, rng);
    d.v = d.k;  // the value is the key row's first 512 dims: one pool
    d.vf = d.kf;
    const Paged g = paginate(p, d, page_size, rng);
    flashmha_mla_decode_shape shape;
    std::memset(&shape, 0, sizeof shape);  // contiguous q / o / pages, default options
    shape.dtype = p.dtype.code;
    shape.varlen = p.varlen ? 1 : 0;
    shape.batch = p.cu_q.size() - 1;
    for (size_t b = 0; b + 1 < p.cu_q.size(); ++b) {
        shape.seqlen_q = std::max<size_t>(shape.seqlen_q, p.cu_q[b + 1] - p.cu_q[b]);
    }
    shape.total_q = p.cu_q.back();
    shape.heads_q = p.heads_q;
    shape.num_pages = g.num_pages;
    shape.page_size = g.page_size;
    shape.max_pages_per_seq = g.max_pages;
    shape.options.causal = p.causal ? 1 : 0;
    shape.lse = 1;
    shape.split_mode = FLASHMHA_SPLIT_COUNT;
    shape.split_value = splits;
    flashmha_mla_decode_plan *plan = nullptr;
    expect_status(flashmha_mla_decode_plan_create(&shape, &plan), FLASHMHA_OK, name + " plan");
    if (plan == nullptr) return;
    flashmha_decode_info info;
    expect_status(flashmha_mla_decode_plan_info(plan, &info), FLASHMHA_OK, name + " info");
    const size_t rows = static_cast<size_t>(p.cu_q.back()) * p.heads_q;
    const size_t want_ws = splits == 1 ? 0 : splits * rows * (FLASHMHA_MLA_DIM_V + 1);
    if (info.num_splits != splits || info.workspace_elems != want_ws) {
        fail(name + ": " + std::to_string(info.num_splits) + " splits, workspace " +
             std::to_string(info.workspace_elems) + " f32, expected " + std::to_string(want_ws));
    }
    std::vector<uint16_t> q = d.q, pool = g.k, o(rows * FLASHMHA_MLA_DIM_V, 0);
    std::vector<int32_t> table = g.table, lens = g.cache_lens, cu_q = p.cu_q;
    std::vector<float> lse(rows, 0.0f), ws(info.workspace_elems + 1, 0.0f);
    flashmha_mla_decode_bufs bufs;
    std::memset(&bufs, 0, sizeof bufs);
    bufs.q = buf(q);
    bufs.kv_cache = buf(pool);
    bufs.block_table = buf(table);
    bufs.cache_seqlens = buf(lens);
    if (p.varlen) bufs.cu_seqlens_q = buf(cu_q);
    bufs.lse = buf(lse);
    if (info.workspace_elems > 0) {
        bufs.o = buf(o);
        bufs.workspace = buf(ws.data(), info.workspace_elems - 1);
        expect_status(flashmha_emulate_mla_decode_run(plan, &bufs), FLASHMHA_ERR_BUFFER,
                      name + " short workspace");
    }
    bufs.workspace = buf(ws.data(), info.workspace_elems);
    // o one element short of [rows, 512]: rejected before anything runs.
    bufs.o = buf(o.data(), o.size() - 1);
    expect_status(flashmha_emulate_mla_decode_run(plan, &bufs), FLASHMHA_ERR_BUFFER,
                  name + " short o");
    if (std::any_of(o.begin(), o.end(), [](uint16_t x) { return x != 0; })) {
        fail(name + ": a rejected run wrote o");
    }
    bufs.o = buf(o);
    const flashmha_status st = flashmha_emulate_mla_decode_run(plan, &bufs);
    expect_status(st, FLASHMHA_OK, name + " run");
    flashmha_mla_decode_plan_destroy(plan);
    if (st != FLASHMHA_OK) return;
    if (pool != g.k || q != d.q || table != g.table) fail(name + ": an input was written");
    const auto [err_o, err_lse] = check_against_cpu(name, p, d, o, lse, FLASHMHA_MLA_DIM_V);
    std::printf("capi client: %s: max |O - ref| %.3g, max |LSE - ref| %.3g\n", name.c_str(),
                err_o, err_lse);

    // Typed errors at planning: no query heads; an unknown kv_dtype.
    shape.heads_q = 0;
    flashmha_mla_decode_plan *bad = nullptr;
    expect_status(flashmha_mla_decode_plan_create(&shape, &bad), FLASHMHA_ERR_SHAPE,
                  name + " with 0 query heads");
    shape.heads_q = p.heads_q;
    shape.kv_dtype = static_cast<flashmha_kv_dtype>(9);
    expect_status(flashmha_mla_decode_plan_create(&shape, &bad), FLASHMHA_ERR_INVALID_ARGUMENT,
                  name + " with an unknown kv_dtype");
    if (bad != nullptr) fail(name + ": a rejected shape handed out a plan");
}

// ---- KV append into FP8 pages, then decode from them -------------------------------------

// The value of an FP8 code, by the format's definition (e4m3: bias 7, S.1111.111 NaN, no
// infinities; e5m2: bias 15, IEEE-like specials).
double fp8_value(uint8_t code, bool e4m3) {
    const int mbits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15, emax = e4m3 ? 15 : 31;
    const int e = (code & 0x7f) >> mbits, m = code & ((1 << mbits) - 1);
    const double sign = (code & 0x80) ? -1.0 : 1.0;
    if (e4m3 && e == emax && m == (1 << mbits) - 1) return NAN;
    if (!e4m3 && e == emax) return m == 0 ? sign * INFINITY : NAN;
    if (e == 0) return sign * std::ldexp(m, 1 - bias - mbits);
    return sign * std::ldexp((1 << mbits) + m, e - bias - mbits);
}

// A server step over FP8 pages: every key of `p` is appended by position into shuffled FP8
// pages (per-KV-head scales), then the new tokens are decoded from those pages. Checks the
// quantisation (each dequantised element within half an FP8 step of its source) and the decode
// against the CPU attention over the dequantised keys and values.
void check_fp8_append_then_decode(const Problem &p, bool e4m3, std::mt19937_64 &rng) {
    const std::string name = std::string("fp8 ") + (e4m3 ? "e4m3" : "e5m2") + " append+decode " +
                             p.dtype.name;
    const Data d = draw(p, rng);
    const size_t page_size = 1 + rng() % 16, batch = p.cu_k.size() - 1;
    const size_t hkv = p.heads_kv, dim = p.head_dim, row = hkv * dim;
    // The block table of a 16-bit pagination (its pools are not used).
    const Paged g = paginate(p, d, page_size, rng);
    std::vector<float> k_scales(hkv), v_scales(hkv);
    for (size_t h = 0; h < hkv; ++h) {
        k_scales[h] = 0.25f + 0.125f * static_cast<float>(h);
        v_scales[h] = 0.5f / (1.0f + static_cast<float>(h));
    }
    flashmha_decode_shape shape = decode_shape_of(p, g);
    shape.kv_dtype = e4m3 ? FLASHMHA_KV_FP8_E4M3 : FLASHMHA_KV_FP8_E5M2;
    shape.kv_scales = FLASHMHA_KV_SCALES_PER_KV_HEAD;
    shape.split_value = 2;
    // Append every key of every item: token t is key j of item b.
    std::vector<int32_t> token_batch, token_pos;
    for (size_t b = 0; b < batch; ++b) {
        for (int32_t j = 0; j < p.cu_k[b + 1] - p.cu_k[b]; ++j) {
            token_batch.push_back(static_cast<int32_t>(b));
            token_pos.push_back(j);
        }
    }
    const size_t tokens = token_pos.size();
    flashmha_kv_append_plan *append = nullptr;
    expect_status(flashmha_kv_append_plan_create(&shape, tokens, FLASHMHA_APPEND_POSITIONS,
                                                 &append),
                  FLASHMHA_OK, name + " append plan");
    if (append == nullptr) return;
    // Filler codes (1) in every slot no key lands in.
    const std::vector<uint8_t> filler(g.num_pages * page_size * row, 1);
    DecodeHost<uint8_t> host(p, d, g, filler, filler);
    std::vector<uint16_t> k_new = d.k, v_new = d.v;
    flashmha_kv_append_bufs ab;
    std::memset(&ab, 0, sizeof ab);
    ab.k_new = buf(k_new);
    ab.v_new = buf(v_new);
    ab.k_cache = buf(host.k);
    ab.v_cache = buf(host.v);
    ab.block_table = buf(host.table);
    ab.token_batch = buf(token_batch);
    ab.token_pos = buf(token_pos);
    ab.k_scales = buf(k_scales);
    ab.v_scales = buf(v_scales);
    expect_status(flashmha_emulate_kv_append_run(append, &ab), FLASHMHA_OK, name + " append");
    flashmha_kv_append_plan_destroy(append);

    // The dequantised keys and values, packed as the reference reads them.
    Data deq = d;
    const double step = e4m3 ? 1.0 / 16.0 : 1.0 / 8.0;  // half an FP8 step, relative
    double worst_quant = 0.0;
    for (size_t t = 0; t < tokens; ++t) {
        const size_t b = static_cast<size_t>(token_batch[t]), j = static_cast<size_t>(token_pos[t]);
        const size_t page = static_cast<size_t>(host.table[b * g.max_pages + j / page_size]);
        for (size_t h = 0; h < hkv; ++h) {
            for (size_t c = 0; c < dim; ++c) {
                const size_t at = (page * page_size + j % page_size) * row + h * dim + c;
                const size_t src = t * row + h * dim + c;
                deq.kf[src] = fp8_value(host.k[at], e4m3) * k_scales[h];
                deq.vf[src] = fp8_value(host.v[at], e4m3) * v_scales[h];
                for (const auto &[got, want] : {std::make_pair(deq.kf[src], d.kf[src]),
                                                std::make_pair(deq.vf[src], d.vf[src])}) {
                    // Relative error of round-to-nearest, plus the subnormal range's absolute
                    // step (at most 2^-9 x scale <= 2^-9 here).
                    const double err = std::fabs(got - want) - step * std::fabs(want);
                    if (!(err <= worst_quant)) worst_quant = err;
                }
            }
        }
    }
    check_close(name + " quantisation", worst_quant, std::ldexp(1.0, -9));

    flashmha_decode_plan *plan = nullptr;
    expect_status(flashmha_decode_plan_create(&shape, &plan), FLASHMHA_OK, name + " plan");
    if (plan == nullptr) return;
    flashmha_decode_info info;
    expect_status(flashmha_decode_plan_info(plan, &info), FLASHMHA_OK, name + " info");
    std::vector<float> ws(info.workspace_elems);
    flashmha_decode_bufs db = host.bufs(p.varlen);
    db.k_scales = buf(k_scales);
    db.v_scales = buf(v_scales);
    db.workspace = buf(ws);
    const flashmha_status st = flashmha_emulate_decode_run(plan, &db);
    expect_status(st, FLASHMHA_OK, name + " decode");
    flashmha_decode_plan_destroy(plan);
    if (st != FLASHMHA_OK) return;
    const auto [err_o, err_lse] = check_against_cpu(name, p, deq, host.o, host.lse);
    std::printf("capi client: %s: %zu keys, max quantisation excess %.3g, max |O - ref| %.3g, "
                "max |LSE - ref| %.3g\n",
                name.c_str(), tokens, worst_quant, err_o, err_lse);
}

// ---- merge_states ------------------------------------------------------------------------

struct FwdOut {
    std::vector<uint16_t> o;
    std::vector<float> lse;
};

// The padded forward of one item (q [sq, hq, d], k/v [sk, hkv, d]) on the emulator.
FwdOut forward(const Dtype &dt, size_t sq, size_t sk, size_t hq, size_t hkv, size_t dim,
               const uint16_t *q, const uint16_t *k, const uint16_t *v) {
    Problem p{dt, false, false, hq, hkv, dim, {0, static_cast<int32_t>(sq)},
              {0, static_cast<int32_t>(sk)}};
    const flashmha_shape shape = shape_of(p);
    FwdOut out{std::vector<uint16_t>(sq * hq * dim), std::vector<float>(hq * sq)};
    flashmha_bufs bufs;
    std::memset(&bufs, 0, sizeof bufs);
    bufs.q = buf(const_cast<uint16_t *>(q), sq * hq * dim);
    bufs.k = buf(const_cast<uint16_t *>(k), sk * hkv * dim);
    bufs.v = buf(const_cast<uint16_t *>(v), sk * hkv * dim);
    bufs.o = buf(out.o);
    bufs.lse = buf(out.lse);
    expect_status(flashmha_emulate_forward(&shape, &bufs), FLASHMHA_OK, "forward for merge");
    return out;
}

// The forward over keys [0, split) and [split, sk), merged (pair and stacked), against the
// forward over all keys.
void check_merge(const Dtype &dt, std::mt19937_64 &rng) {
    const size_t hkv = 1 + rng() % 2, hq = hkv * (1 + rng() % 2), dim = 64;
    const size_t sq = 1 + rng() % 12, sk = 2 + rng() % 40, split = 1 + rng() % (sk - 1);
    const std::string name = std::string("merge_states ") + dt.name + " rows " +
                             std::to_string(sq) + " keys " + std::to_string(split) + "+" +
                             std::to_string(sk - split);
    Problem p{dt, false, false, hq, hkv, dim, {0, static_cast<int32_t>(sq)},
              {0, static_cast<int32_t>(sk)}};
    const Data d = draw(p, rng);
    const size_t krow = hkv * dim;
    const FwdOut whole = forward(dt, sq, sk, hq, hkv, dim, d.q.data(), d.k.data(), d.v.data());
    const FwdOut a = forward(dt, sq, split, hq, hkv, dim, d.q.data(), d.k.data(), d.v.data());
    const FwdOut b = forward(dt, sq, sk - split, hq, hkv, dim, d.q.data(),
                             d.k.data() + split * krow, d.v.data() + split * krow);

    // The forward's [1, sq, hq, d] O and [1, hq, sq] LSE: rows = sq, heads-major LSE.
    flashmha_merge_shape shape;
    std::memset(&shape, 0, sizeof shape);
    shape.dtype = dt.code;
    shape.form = FLASHMHA_MERGE_PAIR;
    shape.rows = sq;
    shape.heads = hq;
    shape.head_dim = dim;
    shape.lse_layout = FLASHMHA_STATS_HEADS_ROWS;
    // Each half has the forward's error, the merge one more rounding of O.
    const double tol_o = 2.0 * 4.0 * dt.unit_roundoff * 1.5 + dt.unit_roundoff * 1.5;
    for (const flashmha_merge_form form : {FLASHMHA_MERGE_PAIR, FLASHMHA_MERGE_STACKED}) {
        const std::string what =
            name + (form == FLASHMHA_MERGE_PAIR ? " (pair)" : " (stacked)");
        shape.form = form;
        shape.num_states = 2;
        flashmha_merge_plan *plan = nullptr;
        expect_status(flashmha_merge_plan_create(&shape, &plan), FLASHMHA_OK, what + " plan");
        if (plan == nullptr) continue;
        std::vector<uint16_t> stacked_o = a.o, o(a.o.size(), 0);
        stacked_o.insert(stacked_o.end(), b.o.begin(), b.o.end());
        std::vector<float> stacked_lse = a.lse, lse(a.lse.size(), 0.0f);
        stacked_lse.insert(stacked_lse.end(), b.lse.begin(), b.lse.end());
        flashmha_merge_bufs bufs;
        std::memset(&bufs, 0, sizeof bufs);
        if (form == FLASHMHA_MERGE_PAIR) {
            bufs.o_states = buf(const_cast<uint16_t *>(a.o.data()), a.o.size());
            bufs.lse_states = buf(const_cast<float *>(a.lse.data()), a.lse.size());
            bufs.o_b = buf(const_cast<uint16_t *>(b.o.data()), b.o.size());
            bufs.lse_b = buf(const_cast<float *>(b.lse.data()), b.lse.size());
        } else {
            bufs.o_states = buf(stacked_o);
            bufs.lse_states = buf(stacked_lse);
        }
        bufs.o = buf(o);
        bufs.lse = buf(lse);
        expect_status(flashmha_emulate_merge_run(plan, &bufs), FLASHMHA_OK, what + " run");
        flashmha_merge_plan_destroy(plan);
        const double err_o = max_err([&](size_t i) { return dt.value(o[i]); },
                                     [&](size_t i) { return dt.value(whole.o[i]); }, o.size());
        check_close(what + " O vs the whole", err_o, tol_o);
        const double err_lse = max_err([&](size_t i) { return lse[i]; },
                                       [&](size_t i) { return whole.lse[i]; }, lse.size());
        check_close(what + " LSE vs the whole", err_lse, 2e-3);
        std::printf("capi client: %s: max |O - whole| %.3g (tol %.3g), max |LSE - whole| %.3g\n",
                    what.c_str(), err_o, tol_o, err_lse);
    }
}

// ---- head similarity ---------------------------------------------------------------------

void check_head_similarity(const Dtype &dt, std::mt19937_64 &rng) {
    const size_t tokens = 1 + rng() % 70, heads = 2 + rng() % 5, dim = 64;
    const std::string name = std::string("head_similarity ") + dt.name + " tokens " +
                             std::to_string(tokens) + " heads " + std::to_string(heads);
    std::uniform_real_distribution<float> dist(-1.5f, 1.5f);
    std::vector<uint16_t> o(tokens * heads * dim);
    std::vector<double> of(o.size());
    for (size_t i = 0; i < o.size(); ++i) {
        float x = dist(rng);
        if (x == 0.0f) x = 0.5f;
        o[i] = dt.bits(x);
        of[i] = dt.value(o[i]);
    }
    // Sums of cosines over tokens, in double.
    std::vector<double> want(heads * heads, 0.0);
    for (size_t t = 0; t < tokens; ++t) {
        for (size_t i = 0; i < heads; ++i) {
            for (size_t j = 0; j < heads; ++j) {
                const double *x = &of[(t * heads + i) * dim], *y = &of[(t * heads + j) * dim];
                double xy = 0, xx = 0, yy = 0;
                for (size_t c = 0; c < dim; ++c) {
                    xy += x[c] * y[c];
                    xx += x[c] * x[c];
                    yy += y[c] * y[c];
                }
                want[i * heads + j] += xy / std::sqrt(xx * yy);
            }
        }
    }
    // gram holds stale values (the call zeroes its heads² sums) and one extra element that
    // must keep its value.
    std::vector<float> gram(heads * heads + 1, 7.0f);
    flashmha_head_similarity_shape shape;
    std::memset(&shape, 0, sizeof shape);
    shape.dtype = dt.code;
    shape.num_tokens = tokens;
    shape.num_heads = heads;
    shape.head_dim = dim;
    flashmha_head_similarity_bufs bufs;
    bufs.o = buf(o);
    bufs.gram = buf(gram);
    expect_status(flashmha_emulate_head_similarity(&shape, &bufs), FLASHMHA_OK, name);
    // f32 dot products and norms of 64 terms per token: ~1e-6 relative each, summed over
    // at most 70 tokens.
    const double err = max_err([&](size_t i) { return gram[i]; },
                               [&](size_t i) { return want[i]; }, heads * heads);
    check_close(name, err, 1e-4 * static_cast<double>(tokens));
    if (gram.back() != 7.0f) fail(name + ": wrote past heads^2");
    // A gram too small for heads^2 sums: a typed error.
    bufs.gram.len = heads * heads - 1;
    expect_status(flashmha_emulate_head_similarity(&shape, &bufs), FLASHMHA_ERR_BUFFER,
                  name + " short gram");
    std::printf("capi client: %s: max |gram - ref| %.3g\n", name.c_str(), err);
}

void check_op_errors() {
    // Decode: FLASHMHA_SPLIT_AUTO needs the SM count without a context.
    Problem p{kF16, false, false, 2, 2, 64, {0, 1}, {0, 9}};
    std::mt19937_64 rng(1);
    const Data d = draw(p, rng);
    const Paged g = paginate(p, d, 4, rng);
    flashmha_decode_shape shape = decode_shape_of(p, g);
    shape.split_mode = FLASHMHA_SPLIT_AUTO;
    shape.split_value = 0;
    flashmha_decode_plan *plan = nullptr;
    expect_status(flashmha_decode_plan_create(&shape, &plan), FLASHMHA_ERR_INVALID_ARGUMENT,
                  "decode auto split without an SM count");
    if (plan != nullptr) fail("a decode plan without an SM count");
    // A split count of 0 is an invalid option of the Rust plan.
    shape.split_mode = FLASHMHA_SPLIT_COUNT;
    expect_status(flashmha_decode_plan_create(&shape, &plan), FLASHMHA_ERR_INVALID_OPTION,
                  "decode with 0 splits");
    // 3 query heads over 2 KV heads.
    shape.split_value = 1;
    shape.heads_q = 3;
    expect_status(flashmha_decode_plan_create(&shape, &plan), FLASHMHA_ERR_SHAPE,
                  "decode heads 3/2");
    // Without a GPU the context paths are typed errors, not crashes.
    shape.heads_q = 2;
    expect_status(flashmha_decode_plan_create_for_context(nullptr, &shape, &plan),
                  FLASHMHA_ERR_INVALID_ARGUMENT, "decode plan for a NULL context");
    expect_status(flashmha_decode_plan_create(&shape, &plan), FLASHMHA_OK, "decode plan");
    flashmha_decode_bufs bufs;
    std::memset(&bufs, 0, sizeof bufs);
    expect_status(flashmha_decode_run(nullptr, plan, &bufs, nullptr),
                  FLASHMHA_ERR_INVALID_ARGUMENT, "decode run without a context");
    // o aliasing q: the GPU rule, on the emulator too.
    std::vector<uint16_t> q = d.q, k = g.k, v = g.v;
    std::vector<int32_t> table = g.table, lens = g.cache_lens;
    std::vector<float> lse(2);
    bufs.q = buf(q);
    bufs.o = bufs.q;
    bufs.k_cache = buf(k);
    bufs.v_cache = buf(v);
    bufs.block_table = buf(table);
    bufs.cache_seqlens = buf(lens);
    bufs.lse = buf(lse);
    expect_status(flashmha_emulate_decode_run(plan, &bufs), FLASHMHA_ERR_BUFFER,
                  "decode with o aliasing q");
    if (q != d.q) fail("a rejected decode wrote q");
    flashmha_decode_plan_destroy(plan);

    // Merge: a pair without its second state.
    flashmha_merge_shape ms;
    std::memset(&ms, 0, sizeof ms);
    ms.dtype = FLASHMHA_DTYPE_BF16;
    ms.form = FLASHMHA_MERGE_PAIR;
    ms.rows = 2;
    ms.heads = 2;
    ms.head_dim = 64;
    flashmha_merge_plan *mplan = nullptr;
    expect_status(flashmha_merge_plan_create(&ms, &mplan), FLASHMHA_OK, "merge plan");
    std::vector<uint16_t> mo(2 * 2 * 64, bf16_bits(0.5f)), out(mo.size());
    std::vector<float> mlse(4, 0.25f);
    flashmha_merge_bufs mb;
    std::memset(&mb, 0, sizeof mb);
    mb.o_states = buf(mo);
    mb.lse_states = buf(mlse);
    mb.o = buf(out);
    expect_status(flashmha_emulate_merge_run(mplan, &mb), FLASHMHA_ERR_BUFFER,
                  "merge pair without o_b");
    flashmha_merge_plan_destroy(mplan);
    ms.form = static_cast<flashmha_merge_form>(5);
    expect_status(flashmha_merge_plan_create(&ms, &mplan), FLASHMHA_ERR_INVALID_ARGUMENT,
                  "merge with an unknown form");
    // Append: no pools.
    flashmha_kv_append_plan *aplan = nullptr;
    expect_status(flashmha_kv_append_plan_create(nullptr, 1, FLASHMHA_APPEND_SLOTS, &aplan),
                  FLASHMHA_ERR_INVALID_ARGUMENT, "append without pools");
    // Head similarity on a NULL context.
    flashmha_head_similarity_shape hs;
    std::memset(&hs, 0, sizeof hs);
    flashmha_head_similarity_bufs hb;
    std::memset(&hb, 0, sizeof hb);
    expect_status(flashmha_head_similarity(nullptr, &hs, &hb, nullptr),
                  FLASHMHA_ERR_INVALID_ARGUMENT, "head similarity without a context");
    // Every status has a name.
    if (std::string(flashmha_status_string(FLASHMHA_ERR_BUFFER)) != "buffer error") {
        fail(std::string("status string: ") + flashmha_status_string(FLASHMHA_ERR_BUFFER));
    }
}

// d_qk != d_v through the shapes' head_dim_v: each compiled pair (DeepSeek's 192 / 128, and
// 128 / 64) forward and paged decode with a random dtype, layout, masking, GQA group, page size
// and split count against the CPU attention; a pair with no kernel is a typed error for both.
void check_head_dim_pairs(std::mt19937_64 &rng) {
    std::uniform_int_distribution<int> len(1, 20), keys(1, 150);
    for (const auto &[dqk, dv] : {std::pair<size_t, size_t>{192, 128}, {128, 64}}) {
        const Dtype &dt = rng() % 2 == 0 ? kBf16 : kF16;
        const size_t heads_kv = std::uniform_int_distribution<size_t>(1, 2)(rng);
        const size_t group = std::uniform_int_distribution<size_t>(1, 2)(rng);
        const bool causal = rng() % 2 == 0, varlen = rng() % 2 == 0;
        const int sq = len(rng), sk = len(rng);
        Problem fwd{dt, varlen, causal, heads_kv * group, heads_kv, dqk,
                    varlen ? offsets({len(rng), len(rng)}) : offsets({sq, sq}),
                    varlen ? offsets({len(rng), len(rng)}) : offsets({sk, sk})};
        fwd.head_dim_v = dv;
        check_problem(fwd, rng() % 2 == 0, rng);
        const int nq = std::uniform_int_distribution<int>(1, 3)(rng);
        Problem dec{dt, false, causal, heads_kv * group, heads_kv, dqk, offsets({nq, nq}),
                    offsets({std::max(nq, keys(rng)), std::max(nq, keys(rng))})};
        dec.head_dim_v = dv;
        check_decode(dec, 1 + rng() % 16, 1 + static_cast<uint32_t>(rng() % 3), rng);
    }
    // (192, 64) is not compiled: both plans refuse it before anything runs.
    Problem odd{kF16, false, false, 2, 1, 192, offsets({4, 4}), offsets({9, 9})};
    odd.head_dim_v = 64;
    const flashmha_shape shape = shape_of(odd);
    flashmha_plan *plan = nullptr;
    expect_status(flashmha_plan_create(&shape, &plan), FLASHMHA_ERR_UNSUPPORTED,
                  "forward pair 192 / 64");
    if (plan != nullptr) fail("forward pair 192 / 64: a plan was made");
    Paged g;
    g.page_size = 16;
    g.num_pages = 2;
    g.max_pages = 1;
    flashmha_decode_shape dshape = decode_shape_of(odd, g);
    flashmha_decode_plan *dplan = nullptr;
    expect_status(flashmha_decode_plan_create(&dshape, &dplan), FLASHMHA_ERR_UNSUPPORTED,
                  "decode pair 192 / 64");
    if (dplan != nullptr) fail("decode pair 192 / 64: a plan was made");
}

}  // namespace

extern "C" int flashmha_capi_client_main(uint64_t seed) {
    failures = 0;
    std::mt19937_64 rng(seed);
    const char *version = flashmha_version();
    if (version == nullptr || std::strlen(version) == 0) fail("empty version");
    std::printf("capi client: flashmha %s, seed %llu\n", version,
                static_cast<unsigned long long>(seed));

    std::uniform_int_distribution<int> len(1, 20);
    for (const Dtype &dt : {kBf16, kF16}) {
        const size_t heads_kv = std::uniform_int_distribution<size_t>(1, 2)(rng);
        const size_t groups = std::uniform_int_distribution<size_t>(1, 2)(rng);
        const bool causal = rng() % 2 == 0;
        // Padded: two items of equal lengths.
        const int sq = len(rng), sk = len(rng);
        check_problem(Problem{dt, false, causal, heads_kv * groups, heads_kv, 64,
                              offsets({sq, sq}), offsets({sk, sk})},
                      dt.code == FLASHMHA_DTYPE_F16, rng);
        // Varlen: items of different lengths.
        check_problem(Problem{dt, true, !causal, heads_kv * groups, heads_kv, 64,
                              offsets({len(rng), len(rng)}), offsets({len(rng), len(rng)})},
                      dt.code == FLASHMHA_DTYPE_BF16, rng);
    }
    check_errors();
    for (const Dtype &dt : {kBf16, kF16}) {
        const size_t heads_kv = std::uniform_int_distribution<size_t>(1, 2)(rng);
        const size_t group = std::uniform_int_distribution<size_t>(1, 4)(rng);
        const bool causal = rng() % 2 == 0;
        const int sq = len(rng), sk = len(rng);
        check_backward(Problem{dt, false, causal, heads_kv * group, heads_kv, 64,
                               offsets({sq, sq}), offsets({sk, sk})},
                       rng);
        // Varlen with an item without queries and one without keys.
        check_backward(Problem{dt, true, !causal, heads_kv * group, heads_kv, 64,
                               offsets({0, len(rng), len(rng)}), offsets({len(rng), 0, len(rng)})},
                       rng);
    }

    // The header's version is the library's.
    if (std::strcmp(version, FLASHMHA_VERSION_STRING) != 0) {
        fail(std::string("header version ") + FLASHMHA_VERSION_STRING + ", library " + version);
    }
    const std::string numbers = std::to_string(FLASHMHA_VERSION_MAJOR) + "." +
                                std::to_string(FLASHMHA_VERSION_MINOR) + "." +
                                std::to_string(FLASHMHA_VERSION_PATCH);
    if (numbers != FLASHMHA_VERSION_STRING) fail("version macros disagree: " + numbers);

    std::uniform_int_distribution<int> keys(1, 150);
    for (const Dtype &dt : {kBf16, kF16}) {
        const size_t heads_kv = std::uniform_int_distribution<size_t>(1, 2)(rng);
        const size_t group = std::uniform_int_distribution<size_t>(1, 4)(rng);
        const bool causal = rng() % 2 == 0;
        // Padded: two items with the same new tokens and their own cache lengths (each at
        // least the new tokens, which are its last keys).
        const int sq = std::uniform_int_distribution<int>(1, 3)(rng);
        const int sk0 = std::max(sq, keys(rng)), sk1 = std::max(sq, keys(rng));
        const Problem padded{dt, false, causal, heads_kv * group, heads_kv, 64,
                             offsets({sq, sq}), offsets({sk0, sk1})};
        const size_t page = 1 + rng() % 16;
        check_decode(padded, page, 1, rng);
        check_decode(padded, page, 3, rng);
        // Varlen: items with their own new tokens.
        const int q0 = std::uniform_int_distribution<int>(1, 4)(rng), q1 = 1;
        const int k0 = std::max(q0, keys(rng)), k1 = std::max(q1, keys(rng));
        const Problem varlen{dt, true, !causal, heads_kv * group, heads_kv, 64,
                             offsets({q0, q1}), offsets({k0, k1})};
        check_decode(varlen, 1 + rng() % 16, 2, rng);

        check_append(dt, false, rng);
        check_append(dt, true, rng);
        const int fq = std::uniform_int_distribution<int>(1, 2)(rng);
        const Problem fp8{dt, false, true, heads_kv * group, heads_kv, 64, offsets({fq, fq}),
                          offsets({std::max(fq, keys(rng)), std::max(fq, keys(rng))})};
        check_fp8_append_then_decode(fp8, dt.code == FLASHMHA_DTYPE_BF16, rng);
        check_merge(dt, rng);
        check_head_similarity(dt, rng);
        // MLA decode: 8-24 query heads on the one latent head, 1-2 new tokens, pages of 64
        // (the deployments') or 1-16 keys.
        const size_t mla_heads = 8 * std::uniform_int_distribution<size_t>(1, 3)(rng);
        const int mq = std::uniform_int_distribution<int>(1, 2)(rng);
        const Problem mla{dt, false, rng() % 2 == 0, mla_heads, 1, FLASHMHA_MLA_DIM_QK,
                          offsets({mq, mq}), offsets({std::max(mq, keys(rng)), std::max(mq, keys(rng))})};
        check_mla_decode(mla, rng() % 2 == 0 ? 64 : 1 + rng() % 16, 1 + rng() % 3, rng);
    }
    check_head_dim_pairs(rng);
    check_op_errors();
    return failures;
}

// The forward through the C ABI's CUDA path (a context on device `ordinal`, plans for its
// kernels, flashmha_run on device memory from `mem`) on random f16 problems, padded and varlen,
// each checked against the CPU reference; then a padded (192, 128) pair, checked the same way
// when `has_pair_kernels` (sm_80 and newer), else refused with FLASHMHA_ERR_UNSUPPORTED. Returns the number of failed checks.
extern "C" int flashmha_capi_client_cuda_main(uint64_t seed, int32_t ordinal,
                                             const flashmha_client_device_memory *mem,
                                             int32_t has_pair_kernels) {
    failures = 0;
    std::mt19937_64 rng(seed);
    flashmha_context *ctx = nullptr;
    expect_status(flashmha_context_create(ordinal, &ctx), FLASHMHA_OK, "context");
    if (ctx == nullptr) return failures;
    std::uniform_int_distribution<int> len(1, 40);
    const size_t heads_kv = std::uniform_int_distribution<size_t>(1, 2)(rng);
    const size_t groups = std::uniform_int_distribution<size_t>(1, 2)(rng);
    const bool causal = rng() % 2 == 0;
    const int sq = len(rng), sk = len(rng);
    check_problem(Problem{kF16, false, causal, heads_kv * groups, heads_kv, 64,
                          offsets({sq, sq}), offsets({sk, sk})},
                  false, rng, ctx, mem);
    check_problem(Problem{kF16, true, !causal, heads_kv * groups, heads_kv, 128,
                          offsets({len(rng), len(rng)}), offsets({len(rng), len(rng)})},
                  false, rng, ctx, mem);
    // d_qk != d_v (head_dim_v) on the device: DeepSeek's 192 / 128.
    Problem pair{kF16, false, causal, heads_kv * groups, heads_kv, 192, offsets({sq, sq}),
                 offsets({sk, sk})};
    pair.head_dim_v = 128;
    if (has_pair_kernels != 0) {
        check_problem(pair, false, rng, ctx, mem);
    } else {
        const flashmha_shape shape = shape_of(pair);
        flashmha_plan *plan = nullptr;
        expect_status(flashmha_plan_create_for_context(ctx, &shape, &plan),
                      FLASHMHA_ERR_UNSUPPORTED, "pair 192 / 128 without pair kernels");
        if (plan != nullptr) fail("pair 192 / 128 without pair kernels: a plan was made");
    }
    flashmha_context_destroy(ctx);
    return failures;
}
