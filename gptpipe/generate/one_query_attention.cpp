// One new query per (row, head) attending over a key/value cache: the attention of a
// decoding step, softmax(q k^T * scale) v, reading every cached key and value once.
//
// Built on first use by gptpipe/generate/cache_kernel.py (which says why it exists) for the
// machine it runs on, and called through ctypes: a plain C entry point on raw pointers, so
// the build needs ATen's vector and parallel headers only (seconds, not a torch extension's
// minute). Threads come from torch's own pool (at::parallel_for), as its kernels' do.

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

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

// q (B*H, D) float32, contiguous. k, v: element (b, h, l, d) at b*s[0] + h*s[1] + l*s[2] + d.
// out (B*H, D) float32, contiguous.
template <typename T>
void attend(const float* q, const T* k, const T* v, int64_t B, int64_t H, int64_t L, int64_t D,
            const int64_t* ks, const int64_t* vs, float scale, float* out) {
  const int64_t vectorised = D - D % kChunk;  // the rest of a row is done one value at a time
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> weight(L), acc(D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* query = q + bh * D;
      const T* keys = k + b * ks[0] + h * ks[1];
      const T* values = v + b * vs[0] + h * vs[1];

      // scores: one dot product per cached key
      float top = -std::numeric_limits<float>::infinity();
      for (int64_t l = 0; l < L; ++l) {
        const T* key = keys + l * ks[2];
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

      // softmax numerators, the largest score subtracted first
      const FloatVec top_vec(top);
      FloatVec total_vec(0.f);
      int64_t l = 0;
      for (; l + kWidth <= L; l += kWidth) {
        FloatVec e = (FloatVec::loadu(weight.data() + l) - top_vec).exp_u20();
        e.store(weight.data() + l);
        total_vec = total_vec + e;
      }
      float total = sum_lanes(total_vec);
      for (; l < L; ++l) {
        weight[l] = std::exp(weight[l] - top);
        total += weight[l];
      }

      // the weighted sum of the values, normalised once at the end
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < L; ++j) {
        const T* value = values + j * vs[2];
        const FloatVec w(weight[j]);
        FloatVec lo, hi;
        for (int64_t d = 0; d < vectorised; d += kChunk) {
          load_chunk(value + d, lo, hi);
          at::vec::fmadd(lo, w, FloatVec::loadu(acc.data() + d)).store(acc.data() + d);
          at::vec::fmadd(hi, w, FloatVec::loadu(acc.data() + d + kWidth))
              .store(acc.data() + d + kWidth);
        }
        for (int64_t d = vectorised; d < D; ++d) acc[d] += weight[j] * static_cast<float>(value[d]);
      }
      const float inverse = 1.f / total;
      for (int64_t d = 0; d < D; ++d) out[bh * D + d] = acc[d] * inverse;
    }
  });
}

}  // namespace

// Returns 0, or 1 if anything threw (the caller then falls back to torch's attention).
extern "C" __attribute__((visibility("default"))) int gptpipe_one_query_attention(
    const float* q, const void* k, const void* v, int bf16, int64_t B, int64_t H, int64_t L,
    int64_t D, int64_t ks0, int64_t ks1, int64_t ks2, int64_t vs0, int64_t vs1, int64_t vs2,
    float scale, float* out) {
  const int64_t ks[3] = {ks0, ks1, ks2}, vs[3] = {vs0, vs1, vs2};
  try {
    if (bf16) {
      attend(q, static_cast<const c10::BFloat16*>(k), static_cast<const c10::BFloat16*>(v), B, H,
             L, D, ks, vs, scale, out);
    } else {
      attend(q, static_cast<const float*>(k), static_cast<const float*>(v), B, H, L, D, ks, vs,
             scale, out);
    }
  } catch (...) {
    return 1;
  }
  return 0;
}
