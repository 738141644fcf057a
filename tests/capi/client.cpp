// A C++ client of the flashmha C ABI (include/flashmha.h), as a server would use it. Built by
// build.rs with the `cc` crate and run by tests/capi.rs. It runs random problems on the
// emulator entry points and compares O and LSE with a plain CPU attention computed here, in
// double, on the same rounded inputs; and it checks the typed errors (no GPU, bad buffers, bad
// shapes). Returns the number of failed checks; prints each failure.

#include "flashmha.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

int failures = 0;

void fail(const std::string &what) {
    std::fprintf(stderr, "capi client: FAIL %s\n", what.c_str());
    ++failures;
}

void expect_status(flashmha_status got, flashmha_status want, const std::string &what) {
    if (got != want) {
        fail(what + ": status " + std::to_string(got) + ", expected " + std::to_string(want) +
             " (" + flashmha_last_error_message() + ")");
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

// One problem: per-item (sq, sk), packed [rows, heads, d] tensors (padded items all equal).
struct Problem {
    Dtype dtype;
    bool varlen;
    bool causal;
    size_t heads_q, heads_kv, head_dim;
    std::vector<int32_t> cu_q, cu_k;  // per-item row offsets, also for padded
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
    fill(d.v, d.vf, static_cast<size_t>(p.cu_k.back()) * p.heads_kv * p.head_dim);
    return d;
}

// Index of the LSE of (item b, head h, row i): [b, hq, sq] padded, [hq, total_q] varlen.
size_t lse_index(const Problem &p, size_t b, size_t h, size_t i) {
    if (p.varlen) return h * p.cu_q.back() + p.cu_q[b] + i;
    const size_t sq = p.cu_q[1];
    return (b * p.heads_q + h) * sq + i;
}

// Plain attention in double: O [rows, hq, d] and LSE.
void cpu_attention(const Problem &p, const Data &d, std::vector<double> &o,
                   std::vector<double> &lse) {
    const size_t hq = p.heads_q, hkv = p.heads_kv, dim = p.head_dim;
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    o.assign(d.qf.size(), 0.0);
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
                double sum = 0.0;
                for (double &x : s) {
                    x = std::isinf(x) ? 0.0 : std::exp(x - m);
                    sum += x;
                }
                if (sum == 0.0) {
                    // Every key masked: O = 0, LSE = -inf (flashmha::AttnOptions semantics).
                    lse[lse_index(p, b, h, i)] = -INFINITY;
                    continue;
                }
                double *orow = &o[((p.cu_q[b] + i) * hq + h) * dim];
                for (long j = 0; j < sk; ++j) {
                    const double *vr = &d.vf[((p.cu_k[b] + j) * hkv + kvh) * dim];
                    for (size_t c = 0; c < dim; ++c) orow[c] += s[j] / sum * vr[c];
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
    s.options.causal = p.causal ? 1 : 0;
    return s;
}

flashmha_buf buf(void *data, size_t len) {
    flashmha_buf b;
    b.data = data;
    b.len = len;
    return b;
}

// Runs `p` through a plan handle (or the one-call entry point) and checks O and LSE.
void check_problem(const Problem &p, bool one_call, std::mt19937_64 &rng) {
    const std::string name = std::string(p.dtype.name) + (p.varlen ? " varlen" : " padded") +
                             (p.causal ? " causal" : "") + " hq" + std::to_string(p.heads_q) +
                             "/hkv" + std::to_string(p.heads_kv) + " d" +
                             std::to_string(p.head_dim) + (one_call ? " (one call)" : " (plan)");
    Data d = draw(p, rng);
    std::vector<uint16_t> o(d.q.size(), 0);
    std::vector<float> lse(static_cast<size_t>(p.cu_q.back()) * p.heads_q, 0.0f);
    std::vector<int32_t> cu_q = p.cu_q, cu_k = p.cu_k;
    flashmha_bufs bufs;
    std::memset(&bufs, 0, sizeof bufs);
    bufs.q = buf(d.q.data(), d.q.size());
    bufs.k = buf(d.k.data(), d.k.size());
    bufs.v = buf(d.v.data(), d.v.size());
    bufs.o = buf(o.data(), o.size());
    bufs.lse = buf(lse.data(), lse.size());
    if (p.varlen) {
        bufs.cu_seqlens_q = buf(cu_q.data(), cu_q.size());
        bufs.cu_seqlens_k = buf(cu_k.data(), cu_k.size());
    }
    const flashmha_shape shape = shape_of(p);
    flashmha_status st;
    if (one_call) {
        st = flashmha_emulate_forward(&shape, &bufs);
    } else {
        flashmha_plan *plan = nullptr;
        expect_status(flashmha_plan_create(&shape, &plan), FLASHMHA_OK, name + " plan");
        st = flashmha_emulate_run(plan, &bufs);
        flashmha_plan_destroy(plan);
    }
    expect_status(st, FLASHMHA_OK, name + " run");
    if (st != FLASHMHA_OK) return;

    std::vector<double> ref_o, ref_lse;
    cpu_attention(p, d, ref_o, ref_lse);
    // O: P is rounded to the dtype for the P.V product and O to the dtype on output, each a
    // relative error of at most u on values bounded by max|v| = 1.5; 4u covers both with margin.
    const double tol_o = 4.0 * p.dtype.unit_roundoff * 1.5;
    double worst_o = 0.0;
    for (size_t i = 0; i < o.size(); ++i) {
        const double err = std::fabs(p.dtype.value(o[i]) - ref_o[i]);
        if (!(err <= worst_o)) worst_o = err;  // NaN propagates
    }
    if (!(worst_o <= tol_o)) {
        fail(name + ": max |O - ref| = " + std::to_string(worst_o) + " > " +
             std::to_string(tol_o));
    }
    // LSE: scores are f32 dot products of 16-bit values (|s| <= 18 here); 1e-3 is far above
    // f32 accumulation error and far below any mistake in masking or scaling.
    double worst_lse = 0.0;
    for (size_t i = 0; i < lse.size(); ++i) {
        const bool both_masked = std::isinf(ref_lse[i]) && lse[i] == ref_lse[i];
        const double err = both_masked ? 0.0 : std::fabs(lse[i] - ref_lse[i]);
        if (!(err <= worst_lse)) worst_lse = err;
    }
    if (!(worst_lse <= 1e-3)) {
        fail(name + ": max |LSE - ref| = " + std::to_string(worst_lse));
    }
    std::printf("capi client: %s: max |O - ref| %.3g (tol %.3g), max |LSE - ref| %.3g\n",
                name.c_str(), worst_o, tol_o, worst_lse);
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
    bufs.q = buf(q.data(), q.size());
    bufs.k = buf(k.data(), k.size() - 1);
    bufs.v = buf(v.data(), v.size());
    bufs.o = buf(o.data(), o.size());
    expect_status(flashmha_emulate_run(plan, &bufs), FLASHMHA_ERR_BUFFER, "short k");
    if (std::strstr(flashmha_last_error_message(), "k needs") == nullptr) {
        fail(std::string("short-k message: ") + flashmha_last_error_message());
    }
    // cu_seqlens with a padded plan.
    bufs.k.len = k.size();
    std::vector<int32_t> cu{0, 4};
    bufs.cu_seqlens_q = buf(cu.data(), cu.size());
    bufs.cu_seqlens_k = buf(cu.data(), cu.size());
    expect_status(flashmha_emulate_run(plan, &bufs), FLASHMHA_ERR_BUFFER, "unexpected cu_seqlens");
    // The raw GPU path rejects a missing context before touching anything.
    expect_status(flashmha_run(nullptr, plan, &bufs, nullptr), FLASHMHA_ERR_INVALID_ARGUMENT,
                  "run without a context");
    flashmha_plan_destroy(plan);
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
    return failures;
}
