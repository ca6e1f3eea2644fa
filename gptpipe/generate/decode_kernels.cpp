// The two products of a decoding step that torch's CPU kernels run below the memory's speed,
// written out: (1) one new query per (row, head) attending over a key/value cache,
// softmax(q k^T * scale) v, reading every cached key and value once; (2) a Linear applied to
// a few rows (one per sequence of the batch), reading every weight once.
//
// Built on first use by gptpipe/generate/kernels.py (which says why they exist) for the
// machine it runs on, and called through ctypes: plain C entry points on raw pointers, so
// the build needs ATen's vector and parallel headers only (seconds, not a torch extension's
// minute). Threads come from torch's own OpenMP pool (at::parallel_for, built with -fopenmp
// against the libgomp torch ships), as its kernels' do.

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

using at::vec::Vectorized;
using FloatVec = Vectorized<float>;
constexpr int64_t kWidth = FloatVec::size();  // floats per vector register
constexpr int64_t kChunk = 2 * kWidth;        // a bf16 vector holds two float vectors' worth

// kChunk consecutive cache values as two float vectors.
inline void load_chunk(const float* p, FloatVec& lo, FloatVec& hi) {
  lo = FloatVec::loadu(p);
  hi = FloatVec::loadu(p + kWidth);
}

inline void load_chunk(const c10::BFloat16* p, FloatVec& lo, FloatVec& hi) {
  auto halves = at::vec::convert_to_float<c10::BFloat16>(Vectorized<c10::BFloat16>::loadu(p));
  lo = std::get<0>(halves);
  hi = std::get<1>(halves);
}

inline float sum_lanes(const FloatVec& x) {
  return at::vec::vec_reduce_all<float>([](FloatVec& a, FloatVec& b) { return a + b; }, x);
}

// Scores of one query against L cached keys (row stride `stride`), scaled, into weight[0..L);
// returns the largest.
template <typename T>
float scores(const float* query, const T* keys, int64_t stride, int64_t L, int64_t D,
             float scale, float* weight) {
  const int64_t vectorised = D - D % kChunk;  // the rest of a row is done one value at a time
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t l = 0; l < L; ++l) {
    const T* key = keys + l * stride;
    FloatVec sum_lo(0.f), sum_hi(0.f), lo, hi;
    for (int64_t d = 0; d < vectorised; d += kChunk) {
      load_chunk(key + d, lo, hi);
      sum_lo = at::vec::fmadd(lo, FloatVec::loadu(query + d), sum_lo);
      sum_hi = at::vec::fmadd(hi, FloatVec::loadu(query + d + kWidth), sum_hi);
    }
    float dot = sum_lanes(sum_lo + sum_hi);
    for (int64_t d = vectorised; d < D; ++d) dot += static_cast<float>(key[d]) * query[d];
    weight[l] = dot * scale;
    top = std::max(top, weight[l]);
  }
  return top;
}

#if defined(__AVX512BF16__)
// The same for a bf16 cache and a query rounded to bf16, D a multiple of 32 (at most 256):
// the CPU's bf16 dot-product instruction, four keys at a time (four independent sums).
float scores_bf16(const c10::BFloat16* query, const c10::BFloat16* keys, int64_t stride,
                  int64_t L, int64_t D, float scale, float* weight) {
  const int64_t chunks = D / 32;
  __m512bh q[8];
  for (int64_t c = 0; c < chunks; ++c) q[c] = (__m512bh)_mm512_loadu_si512(query + c * 32);
  auto dot = [&](int64_t l, int64_t c) {
    return (__m512bh)_mm512_loadu_si512(keys + l * stride + c * 32);
  };
  float top = -std::numeric_limits<float>::infinity();
  int64_t l = 0;
  for (; l + 4 <= L; l += 4) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t c = 0; c < chunks; ++c) {
      a0 = _mm512_dpbf16_ps(a0, dot(l, c), q[c]);
      a1 = _mm512_dpbf16_ps(a1, dot(l + 1, c), q[c]);
      a2 = _mm512_dpbf16_ps(a2, dot(l + 2, c), q[c]);
      a3 = _mm512_dpbf16_ps(a3, dot(l + 3, c), q[c]);
    }
    weight[l] = _mm512_reduce_add_ps(a0) * scale;
    weight[l + 1] = _mm512_reduce_add_ps(a1) * scale;
    weight[l + 2] = _mm512_reduce_add_ps(a2) * scale;
    weight[l + 3] = _mm512_reduce_add_ps(a3) * scale;
    top = std::max({top, weight[l], weight[l + 1], weight[l + 2], weight[l + 3]});
  }
  for (; l < L; ++l) {
    __m512 a0 = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) a0 = _mm512_dpbf16_ps(a0, dot(l, c), q[c]);
    weight[l] = _mm512_reduce_add_ps(a0) * scale;
    top = std::max(top, weight[l]);
  }
  return top;
}
#endif

// out[0..D) = sum over l of weight[l] * values[l] (row stride `stride`).
template <typename T>
void weighted_sum(const float* weight, const T* values, int64_t stride, int64_t L, int64_t D,
                  float* out) {
  const int64_t vectorised = D - D % kChunk;
  std::fill(out, out + D, 0.f);
  for (int64_t j = 0; j < L; ++j) {
    const T* value = values + j * stride;
    const FloatVec w(weight[j]);
    FloatVec lo, hi;
    for (int64_t d = 0; d < vectorised; d += kChunk) {
      load_chunk(value + d, lo, hi);
      at::vec::fmadd(lo, w, FloatVec::loadu(out + d)).store(out + d);
      at::vec::fmadd(hi, w, FloatVec::loadu(out + d + kWidth)).store(out + d + kWidth);
    }
    for (int64_t d = vectorised; d < D; ++d) out[d] += weight[j] * static_cast<float>(value[d]);
  }
}

// The same for D = CHUNKS * kChunk: the sums stay in registers for the whole pass.
template <int CHUNKS, typename T>
void weighted_sum_in_registers(const float* weight, const T* values, int64_t stride, int64_t L,
                               float* out) {
  FloatVec acc[2 * CHUNKS];
  for (int c = 0; c < 2 * CHUNKS; ++c) acc[c] = FloatVec(0.f);
  for (int64_t j = 0; j < L; ++j) {
    const T* value = values + j * stride;
    const FloatVec w(weight[j]);
    for (int c = 0; c < CHUNKS; ++c) {
      FloatVec lo, hi;
      load_chunk(value + c * kChunk, lo, hi);
      acc[2 * c] = at::vec::fmadd(lo, w, acc[2 * c]);
      acc[2 * c + 1] = at::vec::fmadd(hi, w, acc[2 * c + 1]);
    }
  }
  for (int c = 0; c < 2 * CHUNKS; ++c) acc[c].store(out + c * kWidth);
}

// q (B*H, D) float32, contiguous. k, v: element (b, h, l, d) at b*s[0] + h*s[1] + l*s[2] + d.
// Row b reads keys 0..lengths[b]-1 (lengths null: all L of every row; else each <= L).
// out (B*H, D) float32, contiguous. A bf16 cache is read with the query rounded to bf16, as
// the model's attention does (it casts the query to the cache's dtype).
template <typename T>
void attend(const float* q, const T* k, const T* v, int64_t B, int64_t H, int64_t L,
            const int64_t* lengths, int64_t D, const int64_t* ks, const int64_t* vs, float scale,
            float* out) {
  constexpr bool bf16 = std::is_same_v<T, c10::BFloat16>;
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> weight(L), acc(D), query(D);
    std::vector<T> query_t(D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const int64_t n = lengths == nullptr ? L : lengths[b];
      const T* keys = k + b * ks[0] + h * ks[1];
      const T* values = v + b * vs[0] + h * vs[1];
      for (int64_t d = 0; d < D; ++d) {
        query_t[d] = static_cast<T>(q[bh * D + d]);
        query[d] = bf16 ? static_cast<float>(query_t[d]) : q[bh * D + d];
      }

      // scores: one dot product per cached key
      float top;
#if defined(__AVX512BF16__)
      if constexpr (bf16) {
        top = D % 32 == 0 && D <= 256
                  ? scores_bf16(query_t.data(), keys, ks[2], n, D, scale, weight.data())
                  : scores(query.data(), keys, ks[2], n, D, scale, weight.data());
      } else {
        top = scores(query.data(), keys, ks[2], n, D, scale, weight.data());
      }
#else
      top = scores(query.data(), keys, ks[2], n, D, scale, weight.data());
#endif

      // softmax numerators, the largest score subtracted first
      const FloatVec top_vec(top);
      FloatVec total_vec(0.f);
      int64_t l = 0;
      for (; l + kWidth <= n; l += kWidth) {
        FloatVec e = (FloatVec::loadu(weight.data() + l) - top_vec).exp_u20();
        e.store(weight.data() + l);
        total_vec = total_vec + e;
      }
      float total = sum_lanes(total_vec);
      for (; l < n; ++l) {
        weight[l] = std::exp(weight[l] - top);
        total += weight[l];
      }

      // the weighted sum of the values, normalised once at the end
      switch (D % kChunk == 0 ? D / kChunk : 0) {
        case 1: weighted_sum_in_registers<1>(weight.data(), values, vs[2], n, acc.data()); break;
        case 2: weighted_sum_in_registers<2>(weight.data(), values, vs[2], n, acc.data()); break;
        case 3: weighted_sum_in_registers<3>(weight.data(), values, vs[2], n, acc.data()); break;
        case 4: weighted_sum_in_registers<4>(weight.data(), values, vs[2], n, acc.data()); break;
        default: weighted_sum(weight.data(), values, vs[2], n, D, acc.data());
      }
      const float inverse = 1.f / total;
      for (int64_t d = 0; d < D; ++d) out[bh * D + d] = acc[d] * inverse;
    }
  });
}

// ---------------------------------------------------------------- a Linear on a few rows

// Output rows computed together: each weight chunk loaded is used for R rows' dot products
// against all M inputs, so R * M accumulators are live (at most 16 for M <= 4).
constexpr int64_t kRows = 4;

// Ask for the weights a group ahead (`ahead` elements past `p`: the next R rows) while this
// group's are used. A weight matrix larger than the caches streams from memory once per
// token, and the hardware prefetcher alone keeps too few of its lines in flight for one core:
// on a 2-core Zen 5 one thread's head product (50257 x 768, bf16) read 24 GB/s without this
// and 39 GB/s with it, above torch's own sum of the same tensor (35 GB/s). A prefetch past
// the matrix's end is harmless: the instruction never faults.
template <typename T>
inline void prefetch_next_group(const T* p, int64_t ahead) {
  __builtin_prefetch(p + ahead, 0, 3);
}

// R dot products of weight rows w[0..R) (row stride ldw) with each of the M inputs x[m]
// (row stride I), accumulated in float32: out[m][r].
template <int M, int R>
inline void dot_rows(const float* x, int64_t I, const float* w, int64_t ldw, float (&out)[M][R]) {
  FloatVec acc[M][R];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = FloatVec(0.f);
  const int64_t vectorised = I - I % kWidth;
  for (int64_t d = 0; d < vectorised; d += kWidth) {
    FloatVec xs[M];
    for (int m = 0; m < M; ++m) xs[m] = FloatVec::loadu(x + m * I + d);
    for (int r = 0; r < R; ++r) {
      prefetch_next_group(w + r * ldw + d, R * ldw);
      const FloatVec weight = FloatVec::loadu(w + r * ldw + d);
      for (int m = 0; m < M; ++m) acc[m][r] = at::vec::fmadd(weight, xs[m], acc[m][r]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) {
      float sum = sum_lanes(acc[m][r]);
      for (int64_t d = vectorised; d < I; ++d) sum += w[r * ldw + d] * x[m * I + d];
      out[m][r] = sum;
    }
}

#if defined(__AVX512BF16__)
// bf16 weights and inputs: the CPU's bf16 dot-product instruction (pairs of products summed
// into float32 lanes), 32 weights per instruction, no conversion.
template <int M, int R>
inline void dot_rows(const c10::BFloat16* x, int64_t I, const c10::BFloat16* w, int64_t ldw,
                     float (&out)[M][R]) {
  __m512 acc[M][R];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  const int64_t vectorised = I - I % 32;
  for (int64_t d = 0; d < vectorised; d += 32) {
    __m512bh xs[M];
    for (int m = 0; m < M; ++m) xs[m] = (__m512bh)_mm512_loadu_si512(x + m * I + d);
    for (int r = 0; r < R; ++r) {
      prefetch_next_group(w + r * ldw + d, R * ldw);
      const __m512bh weight = (__m512bh)_mm512_loadu_si512(w + r * ldw + d);
      for (int m = 0; m < M; ++m) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], weight, xs[m]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) {
      float sum = _mm512_reduce_add_ps(acc[m][r]);
      for (int64_t d = vectorised; d < I; ++d)
        sum += static_cast<float>(w[r * ldw + d]) * static_cast<float>(x[m * I + d]);
      out[m][r] = sum;
    }
}
#else
// bf16 without the dot-product instruction: each chunk widened to float32 first.
template <int M, int R>
inline void dot_rows(const c10::BFloat16* x, int64_t I, const c10::BFloat16* w, int64_t ldw,
                     float (&out)[M][R]) {
  FloatVec acc[M][R];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = FloatVec(0.f);
  const int64_t vectorised = I - I % kChunk;
  for (int64_t d = 0; d < vectorised; d += kChunk) {
    FloatVec x_lo[M], x_hi[M];
    for (int m = 0; m < M; ++m) load_chunk(x + m * I + d, x_lo[m], x_hi[m]);
    for (int r = 0; r < R; ++r) {
      prefetch_next_group(w + r * ldw + d, R * ldw);
      FloatVec lo, hi;
      load_chunk(w + r * ldw + d, lo, hi);
      for (int m = 0; m < M; ++m) {
        acc[m][r] = at::vec::fmadd(lo, x_lo[m], acc[m][r]);
        acc[m][r] = at::vec::fmadd(hi, x_hi[m], acc[m][r]);
      }
    }
  }
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) {
      float sum = sum_lanes(acc[m][r]);
      for (int64_t d = vectorised; d < I; ++d)
        sum += static_cast<float>(w[r * ldw + d]) * static_cast<float>(x[m * I + d]);
      out[m][r] = sum;
    }
}
#endif

// y (M, O) = x (M, I) w^T + bias: w (O, I) with row stride ldw, x and y contiguous, bias (O,)
// or null; every array of the one dtype T. Output rows are split between the threads.
template <typename T, int M>
void linear(const T* x, const T* w, const T* bias, T* y, int64_t I, int64_t O, int64_t ldw) {
  auto rows = [&](int64_t o, auto r_tag) {
    constexpr int R = decltype(r_tag)::value;
    float out[M][R];
    dot_rows<M, R>(x, I, w + o * ldw, ldw, out);
    for (int m = 0; m < M; ++m)
      for (int r = 0; r < R; ++r) {
        const float b = bias ? static_cast<float>(bias[o + r]) : 0.f;
        y[m * O + o + r] = static_cast<T>(out[m][r] + b);
      }
  };
  const int64_t groups = O / kRows;
  // a thread takes at least 16 groups (64 rows): fewer are not worth a thread's start
  at::parallel_for(0, groups, 16, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) rows(g * kRows, std::integral_constant<int, kRows>{});
  });
  for (int64_t o = groups * kRows; o < O; ++o) rows(o, std::integral_constant<int, 1>{});
}

template <typename T>
void linear_rows(const T* x, const T* w, const T* bias, T* y, int64_t M, int64_t I, int64_t O,
                 int64_t ldw) {
  switch (M) {
    case 1: return linear<T, 1>(x, w, bias, y, I, O, ldw);
    case 2: return linear<T, 2>(x, w, bias, y, I, O, ldw);
    case 3: return linear<T, 3>(x, w, bias, y, I, O, ldw);
    default: return linear<T, 4>(x, w, bias, y, I, O, ldw);
  }
}

// ---------------------------------------------------------------- a whole decoding step

// The parameters of one block, in the order of the pointer table the step is given.
enum Param { kLn1W, kLn1B, kAttnW, kAttnB, kAttnProjW, kAttnProjB,
             kLn2W, kLn2B, kFcW, kFcB, kFcProjW, kFcProjB, kPerLayer };

// LayerNorm of each of the M rows of x (M, C) -> out (M, C), float32; w, b of the weights'
// dtype (b may be null: GPT configs without biases).
template <typename T>
void layer_norm(const float* x, const T* w, const T* b, int64_t M, int64_t C, float eps,
                float* out) {
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * C;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += row[c];
    mean /= C;
    for (int64_t c = 0; c < C; ++c) var += (row[c] - mean) * (row[c] - mean);
    const float rstd = 1.f / std::sqrt(static_cast<float>(var / C) + eps);
    for (int64_t c = 0; c < C; ++c) {
      const float shift = b ? static_cast<float>(b[c]) : 0.f;
      out[m * C + c] = (row[c] - static_cast<float>(mean)) * rstd * static_cast<float>(w[c]) + shift;
    }
  }
}

template <typename To, typename From>
void convert(const From* in, To* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<To>(in[i]);
}

// GELU in place: exact (erf) or GPT-2's tanh approximation.
void gelu(float* x, int64_t n, bool exact) {
  const FloatVec half(0.5f), one(1.f), inv_sqrt2(static_cast<float>(M_SQRT1_2));
  const FloatVec k0(0.7978845608028654f), k1(0.044715f);  // sqrt(2 / pi)
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) {
    const FloatVec v = FloatVec::loadu(x + i);
    const FloatVec inner = exact ? (v * inv_sqrt2).erf() : (k0 * (v + k1 * v * v * v)).tanh();
    (half * v * (one + inner)).store(x + i);
  }
  for (; i < n; ++i) {
    const float v = x[i];
    const float inner = exact ? std::erf(v * static_cast<float>(M_SQRT1_2))
                              : std::tanh(0.7978845608028654f * (v + 0.044715f * v * v * v));
    x[i] = 0.5f * v * (1.f + inner);
  }
}

// One token per row through every block, as GPT.hidden_states(ids, cache, last=1) with no
// padding: x (M, C) holds the embeddings in and the final LayerNorm's output out. T: the
// weights' dtype, K: the cache's. The cache is (n_layer, rows, H, max_len, D) and its
// first M rows take part: row m's new key and value go to position pos[m], and its query
// attends to its positions 0..pos[m] (rows of a server's cache fill at their own pace).
template <typename T, typename K>
void decode_step(const int64_t* table, K* cache_k, K* cache_v, int64_t rows, int64_t max_len,
                 const int64_t* pos, int64_t n_layer, int64_t H, int64_t C, int64_t M,
                 float eps, bool exact, float* x) {
  const int64_t D = C / H;
  const int64_t head_stride = max_len * D, row_stride = H * head_stride;
  const int64_t layer_stride = rows * row_stride;
  const int64_t strides[3] = {row_stride, head_stride, D};
  std::vector<int64_t> lengths(M);
  for (int64_t m = 0; m < M; ++m) lengths[m] = pos[m] + 1;
  const int64_t L = *std::max_element(lengths.begin(), lengths.end());
  std::vector<float> h(M * 4 * C), q(M * C), y(M * C);
  std::vector<T> in(M * 4 * C), out(M * 4 * C);
  auto param = [&](int64_t layer, Param p) {
    return reinterpret_cast<const T*>(table[layer * kPerLayer + p]);
  };
  // out (M, O) = h (M, I) W^T + b, through the weights' dtype as the model's Linears are
  auto project = [&](int64_t layer, Param w, Param b, int64_t I, int64_t O) {
    convert(h.data(), in.data(), M * I);
    linear_rows(in.data(), param(layer, w), param(layer, b), out.data(), M, I, O, I);
    convert(out.data(), h.data(), M * O);
  };
  for (int64_t layer = 0; layer < n_layer; ++layer) {
    // attention: LayerNorm, the fused query/key/value projection, the cache, one query each
    layer_norm(x, param(layer, kLn1W), param(layer, kLn1B), M, C, eps, h.data());
    project(layer, kAttnW, kAttnB, C, 3 * C);
    K* keys = cache_k + layer * layer_stride;
    K* values = cache_v + layer * layer_stride;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t head = 0; head < H; ++head) {
        const float* row = h.data() + m * 3 * C + head * D;
        const int64_t at = m * row_stride + head * head_stride + pos[m] * D;
        convert(row, q.data() + (m * H + head) * D, D);
        convert(row + C, keys + at, D);
        convert(row + 2 * C, values + at, D);
      }
    attend(q.data(), keys, values, M, H, L, lengths.data(), D, strides, strides,
           1.f / std::sqrt(float(D)), y.data());
    // y is (M, H, D) = (M, C): the heads side by side, as the model's transpose makes them
    std::copy(y.begin(), y.end(), h.begin());
    project(layer, kAttnProjW, kAttnProjB, C, C);
    for (int64_t i = 0; i < M * C; ++i) x[i] += h[i];
    // the MLP
    layer_norm(x, param(layer, kLn2W), param(layer, kLn2B), M, C, eps, h.data());
    project(layer, kFcW, kFcB, C, 4 * C);
    gelu(h.data(), M * 4 * C, exact);
    project(layer, kFcProjW, kFcProjB, 4 * C, C);
    for (int64_t i = 0; i < M * C; ++i) x[i] += h[i];
  }
  const T* ln_f = reinterpret_cast<const T*>(table[n_layer * kPerLayer]);
  const T* ln_f_bias = reinterpret_cast<const T*>(table[n_layer * kPerLayer + 1]);
  layer_norm(x, ln_f, ln_f_bias, M, C, eps, h.data());
  std::copy(h.begin(), h.begin() + M * C, x);
}

}  // namespace

// Each entry point returns 0, or 1 if anything threw (the caller then uses torch instead).

// attend above; lengths: null, or B row lengths, each at most L.
extern "C" __attribute__((visibility("default"))) int gptpipe_one_query_attention(
    const float* q, const void* k, const void* v, int bf16, int64_t B, int64_t H, int64_t L,
    const int64_t* lengths, int64_t D, int64_t ks0, int64_t ks1, int64_t ks2, int64_t vs0,
    int64_t vs1, int64_t vs2, float scale, float* out) {
  if (lengths != nullptr)
    for (int64_t b = 0; b < B; ++b)
      if (lengths[b] < 1 || lengths[b] > L) return 1;
  const int64_t ks[3] = {ks0, ks1, ks2}, vs[3] = {vs0, vs1, vs2};
  try {
    if (bf16) {
      attend(q, static_cast<const c10::BFloat16*>(k), static_cast<const c10::BFloat16*>(v), B, H,
             L, lengths, D, ks, vs, scale, out);
    } else {
      attend(q, static_cast<const float*>(k), static_cast<const float*>(v), B, H, L, lengths, D,
             ks, vs, scale, out);
    }
  } catch (...) {
    return 1;
  }
  return 0;
}

// y (M, O) = x (M, I) w^T + bias, M from 1 to 4; bf16: every array is bfloat16, else
// float32; bias may be null.
extern "C" __attribute__((visibility("default"))) int gptpipe_few_rows_linear(
    const void* x, const void* w, const void* bias, void* y, int bf16, int64_t M, int64_t I,
    int64_t O, int64_t ldw) {
  if (M < 1 || M > 4) return 1;
  try {
    if (bf16) {
      using B = c10::BFloat16;
      linear_rows(static_cast<const B*>(x), static_cast<const B*>(w), static_cast<const B*>(bias),
                  static_cast<B*>(y), M, I, O, ldw);
    } else {
      linear_rows(static_cast<const float*>(x), static_cast<const float*>(w),
                  static_cast<const float*>(bias), static_cast<float*>(y), M, I, O, ldw);
    }
  } catch (...) {
    return 1;
  }
  return 0;
}

// One decoding step (decode_step above): table holds n_layer * 12 parameter pointers (the
// order of Param; a missing bias is null) then ln_f's weight and bias; weights_bf16 and
// cache_bf16 say which arrays are bfloat16 (else float32); gelu_exact picks the GELU; pos
// holds each of the M rows' position.
extern "C" __attribute__((visibility("default"))) int gptpipe_decode_step(
    const int64_t* table, int weights_bf16, void* cache_k, void* cache_v, int cache_bf16,
    int64_t rows, int64_t max_len, const int64_t* pos, int64_t n_layer, int64_t n_head,
    int64_t C, int64_t M, float eps, int gelu_exact, float* x) {
  if (M < 1 || M > 4 || M > rows || C % n_head != 0) return 1;
  for (int64_t m = 0; m < M; ++m)
    if (pos[m] < 0 || pos[m] >= max_len) return 1;
  using B = c10::BFloat16;
  try {
    auto run = [&](auto weights_tag, auto* k, auto* v) {
      using T = decltype(weights_tag);
      decode_step<T>(table, k, v, rows, max_len, pos, n_layer, n_head, C, M, eps, gelu_exact != 0,
                     x);
    };
    if (cache_bf16) {
      auto* k = static_cast<B*>(cache_k);
      auto* v = static_cast<B*>(cache_v);
      weights_bf16 ? run(B{}, k, v) : run(float{}, k, v);
    } else {
      auto* k = static_cast<float*>(cache_k);
      auto* v = static_cast<float*>(cache_v);
      weights_bf16 ? run(B{}, k, v) : run(float{}, k, v);
    }
  } catch (...) {
    return 1;
  }
  return 0;
}
