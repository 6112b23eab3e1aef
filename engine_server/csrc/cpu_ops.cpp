// Fused CPU kernels for the engine's decode step (see engine_server/cpu_ops.py).
//
// paged_decode_attention: one query token per sequence, K/V read in place from the paged
// cache through the block table (no gather copy), online softmax in fp32, and every query
// head of a GQA group scored against each K/V row while it is in registers/L1.
// rms_norm: one pass per row, fp32 accumulation, one rounding to the output dtype.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define TRIAGE_AVX512_BF16 1
#endif

namespace {

constexpr int64_t kMaxHeadDim = 256;

inline float to_float(float x) { return x; }

inline float to_float(c10::BFloat16 x) {
  // bf16 is the top half of an fp32: a shift, which vectorises (c10's conversion may not).
  uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <typename T>
inline void load_row(const T* __restrict src, float* __restrict dst, int64_t d) {
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) dst[i] = to_float(src[i]);
}

inline float dot(const float* __restrict a, const float* __restrict b, int64_t d) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* __restrict y, float a, const float* __restrict x, int64_t d) {
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) y[i] += a * x[i];
}

inline void scale(float* __restrict y, float a, int64_t d) {
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) y[i] *= a;
}

// exp for the softmax weights, in a form the compiler vectorises (std::exp is a scalar libm
// call per score): 2^k * p(r) with r = x - k ln2 and a degree-6 Taylor p, ~1e-7 relative error.
// Inputs are <= 0 (scores minus their running max); below -87 it returns ~1e-38, not 0.
// (Shifts and bit casts only: GCC leaves floor()/memcpy versions of it scalar.)
inline float exp_nonpositive(float x) {
  const float y = std::max(x, -87.f) * 1.44269504f;  // exp(x) = 2^y
  const int32_t k = static_cast<int32_t>(y - 0.5f);  // round to nearest for y <= 0.5 (truncation)
  const float kf = static_cast<float>(k);
  const float r = (x - kf * 0.693359375f) + kf * 2.12194440e-4f;  // ln2 split in two for accuracy
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  return p * __builtin_bit_cast(float, (k + 127) << 23);
}

// DIM > 0 fixes the head size at compile time (fully unrolled loops); 0 reads it at run time.
template <typename T, typename Idx, int64_t DIM>
void decode_attention_impl(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const at::Tensor& block_tables, const at::Tensor& context_lens, at::Tensor& out,
                           float softmax_scale) {
  const int64_t n = q.size(0), heads = q.size(1);
  const int64_t block_size = k_cache.size(1), kv_heads = k_cache.size(2);
  const int64_t d = DIM > 0 ? DIM : q.size(2);
  const int64_t group = heads / kv_heads;
  const int64_t q_seq = q.stride(0), q_head = q.stride(1);
  const int64_t kv_row = kv_heads * d, kv_block = block_size * kv_row;
  const int64_t table_stride = block_tables.stride(0);
  const T* qp = q.data_ptr<T>();
  const T* kp = k_cache.data_ptr<T>();
  const T* vp = v_cache.data_ptr<T>();
  const Idx* tables = block_tables.data_ptr<Idx>();
  const Idx* lens = context_lens.data_ptr<Idx>();
  T* op = out.data_ptr<T>();

  at::parallel_for(0, n * kv_heads, 1, [&](int64_t begin, int64_t end) {
    // Per-thread scratch: the group's queries and accumulators, one block of scores, and one
    // block of K or V converted to fp32 once (then reused by every head of the group).
    std::vector<float> qf(group * d), acc(group * d), scores(group * block_size), rows(block_size * d);
    std::vector<float> m(group), l(group);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task / kv_heads, kvh = task % kv_heads;
      const int64_t ctx = static_cast<int64_t>(lens[s]);
      for (int64_t g = 0; g < group; ++g) {
        const T* src = qp + s * q_seq + (kvh * group + g) * q_head;
        float* dst = qf.data() + g * d;
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) dst[i] = to_float(src[i]) * softmax_scale;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
      std::fill(l.begin(), l.end(), 0.f);
      const Idx* table = tables + s * table_stride;
      for (int64_t start = 0; start < ctx; start += block_size) {
        const int64_t len = std::min(block_size, ctx - start);
        const int64_t base = static_cast<int64_t>(table[start / block_size]) * kv_block + kvh * d;
        // Scores of the whole block first, so the running max/rescale happens once per block.
        for (int64_t t = 0; t < len; ++t) load_row(kp + base + t * kv_row, rows.data() + t * d, d);
        for (int64_t g = 0; g < group; ++g) {
          float* sc = scores.data() + g * block_size;
          for (int64_t t = 0; t < len; ++t) sc[t] = dot(qf.data() + g * d, rows.data() + t * d, d);
          float bmax = m[g];
          for (int64_t t = 0; t < len; ++t) bmax = std::max(bmax, sc[t]);
#pragma omp simd
          for (int64_t t = 0; t < len; ++t) sc[t] = exp_nonpositive(sc[t] - bmax);
          float sum = 0.f;
          for (int64_t t = 0; t < len; ++t) sum += sc[t];
          const float correction = std::exp(m[g] - bmax);  // exp(-inf) = 0 on the first block
          l[g] = l[g] * correction + sum;
          m[g] = bmax;
          scale(acc.data() + g * d, correction, d);
        }
        for (int64_t t = 0; t < len; ++t) load_row(vp + base + t * kv_row, rows.data() + t * d, d);
        for (int64_t g = 0; g < group; ++g) {
          float* a = acc.data() + g * d;
          const float* p = scores.data() + g * block_size;
          int64_t t = 0;
          // Four rows per pass over the accumulator: a quarter of its loads and stores.
          for (; t + 4 <= len; t += 4) {
            const float* v0 = rows.data() + t * d;
#pragma omp simd
            for (int64_t i = 0; i < d; ++i)
              a[i] += p[t] * v0[i] + p[t + 1] * v0[d + i] + p[t + 2] * v0[2 * d + i] + p[t + 3] * v0[3 * d + i];
          }
          for (; t < len; ++t) axpy(a, p[t], rows.data() + t * d, d);
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        const float inv = l[g] > 0.f ? 1.f / l[g] : 0.f;  // an empty context attends to nothing
        T* dst = op + (s * heads + kvh * group + g) * d;
        const float* a = acc.data() + g * d;
        for (int64_t i = 0; i < d; ++i) dst[i] = static_cast<T>(a[i] * inv);
      }
    }
  });
}

#ifdef TRIAGE_AVX512_BF16
// The bf16 fast path, in 16-token chunks (one fp32 vector of scores per query head):
//   scores: q.k with VDPBF16PS straight on the bf16 rows (the products are exact in fp32, the
//     sums fp32), one partial vector per token, then one transposed reduction for 16 tokens
//     (~2 shuffles + 1 add per token instead of a horizontal sum each);
//   softmax: the chunk's max, exp and sum on whole vectors;
//   values: each V row converted to fp32 once, then FMAs into fp32 accumulators per head.

// Lane i of the result is the sum of v[i]'s 16 lanes.
inline __m512 transpose_sum16(const float* v) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane: [x0+x2, y0+y2, x1+x3, y1+y3]
    const __m512 x = _mm512_loadu_ps(v + 32 * i), y = _mm512_loadu_ps(v + 32 * i + 16);
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
  }
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: that lane's partial sums of 4 rows
    const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // Then across the four 128-bit lanes: rows 0-7 and 8-15, then all 16 in order.
  const __m512 c0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x88), _mm512_shuffle_f32x4(b[0], b[1], 0xDD));
  const __m512 c1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x88), _mm512_shuffle_f32x4(b[2], b[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c0, c1, 0x88), _mm512_shuffle_f32x4(c0, c1, 0xDD));
}

// exp_nonpositive on a vector: 2^k * p(r), with scalef applying 2^k.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(k, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 720.f);
  for (const float c : {1.f / 120.f, 1.f / 24.f, 1.f / 6.f, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, k);
}

// 16 bf16 -> 16 fp32: a widening and a shift.
inline __m512 load_bf16x16(const c10::BFloat16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 16 fp32 -> 16 bf16, rounded to nearest even (as c10's conversion).
inline void store_bf16x16(c10::BFloat16* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}

// Up to this many query heads per KV head on the fast path (the generic one takes any).
constexpr int64_t kMaxGroup = 8;

// G > 0 fixes the GQA group size at compile time, so the group's queries and accumulators
// live in registers; 0 reads it at run time (<= kMaxGroup).
template <typename Idx, int64_t D, int64_t G>
void decode_attention_bf16(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const at::Tensor& block_tables, const at::Tensor& context_lens, at::Tensor& out,
                           float softmax_scale) {
  constexpr int64_t kChunks = D / 32, kVecs = D / 16, kTile = 16;
  using T = c10::BFloat16;
  const int64_t n = q.size(0), heads = q.size(1);
  const int64_t block_size = k_cache.size(1), kv_heads = k_cache.size(2);
  const int64_t group = G > 0 ? G : heads / kv_heads;
  const int64_t q_seq = q.stride(0), q_head = q.stride(1);
  const int64_t kv_row = kv_heads * D, kv_block = block_size * kv_row;
  const int64_t table_stride = block_tables.stride(0);
  const T* qp = q.data_ptr<T>();
  const T* kp = k_cache.data_ptr<T>();
  const T* vp = v_cache.data_ptr<T>();
  const Idx* tables = block_tables.data_ptr<Idx>();
  const Idx* lens = context_lens.data_ptr<Idx>();
  T* op = out.data_ptr<T>();

  at::parallel_for(0, n * kv_heads, 1, [&](int64_t begin, int64_t end) {
    // Zero-initialised, so the unused rows of a short tile hold finite values (masked later).
    alignas(64) float partial[kMaxGroup][kTile][16] = {};
    alignas(64) float probs[kMaxGroup][kTile];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task / kv_heads, kvh = task % kv_heads;
      const int64_t ctx = static_cast<int64_t>(lens[s]);
      const T* qs = qp + s * q_seq + kvh * group * q_head;
      __m512i qv[kMaxGroup][kChunks];
      __m512 acc[kMaxGroup][kVecs];
      float m[kMaxGroup], l[kMaxGroup], correction[kMaxGroup];
      for (int64_t g = 0; g < group; ++g) {
        for (int64_t c = 0; c < kChunks; ++c) qv[g][c] = _mm512_loadu_si512(qs + g * q_head + 32 * c);
        for (int64_t j = 0; j < kVecs; ++j) acc[g][j] = _mm512_setzero_ps();
        m[g] = -std::numeric_limits<float>::infinity();
        l[g] = 0.f;
      }
      const Idx* table = tables + s * table_stride;
      for (int64_t pos = 0; pos < ctx;) {
        const int64_t in_block = pos % block_size;
        const int64_t len = std::min({kTile, ctx - pos, block_size - in_block});
        const T* krows = kp + static_cast<int64_t>(table[pos / block_size]) * kv_block + in_block * kv_row + kvh * D;
        const T* vrows = vp + (krows - kp);
        pos += len;
        if (pos < ctx) {
          // Between steps the GEMMs push the cache out of L2, and blocks lie anywhere: fetch the
          // next tile's K/V rows while this one is computed.
          const int64_t next_in = pos % block_size;
          const int64_t next_len = std::min({kTile, ctx - pos, block_size - next_in});
          const int64_t next = static_cast<int64_t>(table[pos / block_size]) * kv_block + next_in * kv_row + kvh * D;
          for (int64_t t = 0; t < next_len; ++t)
            for (int64_t c = 0; c < D; c += 32) {
              _mm_prefetch(reinterpret_cast<const char*>(kp + next + t * kv_row + c), _MM_HINT_T0);
              _mm_prefetch(reinterpret_cast<const char*>(vp + next + t * kv_row + c), _MM_HINT_T0);
            }
        }
        for (int64_t t = 0; t < len; ++t) {
          __m512i k[kChunks];
          for (int64_t c = 0; c < kChunks; ++c) k[c] = _mm512_loadu_si512(krows + t * kv_row + 32 * c);
          for (int64_t g = 0; g < group; ++g) {
            __m512 dot = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)qv[g][0], (__m512bh)k[0]);
            for (int64_t c = 1; c < kChunks; ++c) dot = _mm512_dpbf16_ps(dot, (__m512bh)qv[g][c], (__m512bh)k[c]);
            _mm512_store_ps(partial[g][t], dot);
          }
        }
        const __mmask16 valid = static_cast<__mmask16>((1u << len) - 1);
        for (int64_t g = 0; g < group; ++g) {
          const __m512 sc = _mm512_mul_ps(transpose_sum16(partial[g][0]), _mm512_set1_ps(softmax_scale));
          const float bmax = std::max(m[g], _mm512_mask_reduce_max_ps(valid, sc));
          const __m512 p = _mm512_maskz_mov_ps(valid, exp_nonpositive(_mm512_sub_ps(sc, _mm512_set1_ps(bmax))));
          _mm512_store_ps(probs[g], p);
          correction[g] = std::exp(m[g] - bmax);  // exp(-inf) = 0 on the first tile
          l[g] = l[g] * correction[g] + _mm512_reduce_add_ps(p);
          m[g] = bmax;
          const __m512 corr = _mm512_set1_ps(correction[g]);
          for (int64_t j = 0; j < kVecs; ++j) acc[g][j] = _mm512_mul_ps(acc[g][j], corr);
        }
        // Each V row is widened to fp32 once, in registers, for every head of the group.
        for (int64_t t = 0; t < len; ++t) {
          __m512 v[kVecs];
          for (int64_t j = 0; j < kVecs; ++j) v[j] = load_bf16x16(vrows + t * kv_row + 16 * j);
          for (int64_t g = 0; g < group; ++g) {
            const __m512 pt = _mm512_set1_ps(probs[g][t]);
            for (int64_t j = 0; j < kVecs; ++j) acc[g][j] = _mm512_fmadd_ps(pt, v[j], acc[g][j]);
          }
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        const __m512 inv = _mm512_set1_ps(l[g] > 0.f ? 1.f / l[g] : 0.f);  // an empty context attends to nothing
        T* dst = op + (s * heads + kvh * group + g) * D;
        for (int64_t j = 0; j < kVecs; ++j) store_bf16x16(dst + 16 * j, _mm512_mul_ps(acc[g][j], inv));
      }
    }
  });
}

template <typename Idx, int64_t D>
void dispatch_group(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& tables,
                    const at::Tensor& lens, at::Tensor& out, float softmax_scale) {
  switch (q.size(1) / k.size(2)) {
    case 1: return decode_attention_bf16<Idx, D, 1>(q, k, v, tables, lens, out, softmax_scale);
    case 2: return decode_attention_bf16<Idx, D, 2>(q, k, v, tables, lens, out, softmax_scale);
    case 3: return decode_attention_bf16<Idx, D, 3>(q, k, v, tables, lens, out, softmax_scale);
    case 4: return decode_attention_bf16<Idx, D, 4>(q, k, v, tables, lens, out, softmax_scale);
    default: return decode_attention_bf16<Idx, D, 0>(q, k, v, tables, lens, out, softmax_scale);
  }
}
#endif

template <typename T, typename Idx>
void dispatch_head_dim(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& tables,
                       const at::Tensor& lens, at::Tensor& out, float softmax_scale) {
#ifdef TRIAGE_AVX512_BF16
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    const bool fits = q.size(1) / k.size(2) <= kMaxGroup;
    if (fits && q.size(2) == 64) return dispatch_group<Idx, 64>(q, k, v, tables, lens, out, softmax_scale);
    if (fits && q.size(2) == 128) return dispatch_group<Idx, 128>(q, k, v, tables, lens, out, softmax_scale);
    return decode_attention_impl<T, Idx, 0>(q, k, v, tables, lens, out, softmax_scale);
  }
#endif
  switch (q.size(2)) {
    case 64: return decode_attention_impl<T, Idx, 64>(q, k, v, tables, lens, out, softmax_scale);
    case 128: return decode_attention_impl<T, Idx, 128>(q, k, v, tables, lens, out, softmax_scale);
    default: return decode_attention_impl<T, Idx, 0>(q, k, v, tables, lens, out, softmax_scale);
  }
}

template <typename T>
void dispatch_index(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& tables,
                    const at::Tensor& lens, at::Tensor& out, float softmax_scale) {
  if (tables.scalar_type() == at::kLong) {
    dispatch_head_dim<T, int64_t>(q, k, v, tables, lens, out, softmax_scale);
  } else {
    dispatch_head_dim<T, int32_t>(q, k, v, tables, lens, out, softmax_scale);
  }
}

}  // namespace

// q: [n, H, D] (rows may be strided, the last dim contiguous); k_cache, v_cache:
// [num_blocks, block_size, Hkv, D] contiguous; block_tables: [n, >= ceil(ctx / block_size)];
// context_lens: [n], same integer dtype as block_tables. Returns [n, H, D] in q's dtype.
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& context_lens, double softmax_scale) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.dim() == 4, "bad ranks");
  TORCH_CHECK(q.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(q.size(2) <= kMaxHeadDim && q.size(2) == k_cache.size(3), "head_dim must match and be <= 256");
  TORCH_CHECK(q.size(1) % k_cache.size(2) == 0, "query heads must be a multiple of KV heads");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "KV cache must be contiguous");
  TORCH_CHECK(k_cache.scalar_type() == q.scalar_type() && v_cache.scalar_type() == q.scalar_type(), "dtype mismatch");
  TORCH_CHECK(block_tables.scalar_type() == context_lens.scalar_type(), "tables and lens must share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong || block_tables.scalar_type() == at::kInt, "int32/int64 indices");
  const at::Tensor qc = q.stride(2) == 1 ? q : q.contiguous();
  const at::Tensor tables = block_tables.stride(1) == 1 ? block_tables : block_tables.contiguous();
  const at::Tensor lens = context_lens.contiguous();
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  const float s = static_cast<float>(softmax_scale);
  switch (q.scalar_type()) {
    case at::kFloat: dispatch_index<float>(qc, k_cache, v_cache, tables, lens, out, s); break;
    case at::kBFloat16: dispatch_index<c10::BFloat16>(qc, k_cache, v_cache, tables, lens, out, s); break;
    default: TORCH_CHECK(false, "paged_decode_attention supports float32 and bfloat16");
  }
  return out;
}

namespace {

template <typename T>
void rms_norm_impl(const at::Tensor& x, const at::Tensor& w, at::Tensor& out, float eps) {
  const int64_t rows = x.size(0), n = x.size(1);
  const T* xp = x.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  T* op = out.data_ptr<T>();
  // Small batches are a few microseconds of work: only split across threads past ~64K elements
  // (a decode batch of 32 x 576 ran faster on one thread than woken across two).
  const int64_t grain = std::max<int64_t>(1, 65536 / n);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = xp + r * n;
      T* orow = op + r * n;
      float ss = 0.f;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < n; ++i) {
        const float v = to_float(xr[i]);
        ss += v * v;
      }
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
      int64_t i = 0;
#ifdef TRIAGE_AVX512_BF16
      // GCC leaves the bf16 rounding scalar: 16 at a time, the same (x * inv) * w and RNE rounding.
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        const __m512 vinv = _mm512_set1_ps(inv);
        for (; i + 16 <= n; i += 16)
          store_bf16x16(orow + i, _mm512_mul_ps(_mm512_mul_ps(load_bf16x16(xr + i), vinv), load_bf16x16(wp + i)));
      }
#endif
      for (; i < n; ++i) orow[i] = static_cast<T>(to_float(xr[i]) * inv * to_float(wp[i]));
    }
  });
}

}  // namespace

// x: [rows, n] (any leading shape, flattened), w: [n], same dtype. Returns rms_norm(x) * w.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == w.scalar_type(), "CPU tensors of one dtype");
  TORCH_CHECK(w.dim() == 1 && x.size(-1) == w.size(0), "weight must be [hidden]");
  const at::Tensor x2 = x.reshape({-1, x.size(-1)}).contiguous();
  const at::Tensor wc = w.contiguous();
  at::Tensor out = at::empty_like(x2);
  switch (x.scalar_type()) {
    case at::kFloat: rms_norm_impl<float>(x2, wc, out, static_cast<float>(eps)); break;
    case at::kBFloat16: rms_norm_impl<c10::BFloat16>(x2, wc, out, static_cast<float>(eps)); break;
    default: TORCH_CHECK(false, "rms_norm supports float32 and bfloat16");
  }
  return out.view(x.sizes());
}

namespace {

template <typename T>
void rotary_impl(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out) {
  const int64_t tokens = x.size(0), heads = x.size(1), d = x.size(2), half = d / 2;
  const int64_t xs0 = x.stride(0), xs1 = x.stride(1), cs = cos.stride(0), ss = sin.stride(0);
  const T* xp = x.data_ptr<T>();
  const T* cp = cos.data_ptr<T>();
  const T* sp = sin.data_ptr<T>();
  T* op = out.data_ptr<T>();
  // A few microseconds in all at decode batch sizes: threads only for prefill-sized inputs.
  const int64_t grain = std::max<int64_t>(1, 32768 / (heads * d));
  at::parallel_for(0, tokens, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* c = cp + t * cs;
      const T* sn = sp + t * ss;
      for (int64_t h = 0; h < heads; ++h) {
        const T* xr = xp + t * xs0 + h * xs1;
        T* o = op + (t * heads + h) * d;
        // sin carries rotate-half's sign (see rotary.py): out = x * cos + swap_halves(x) * sin.
#ifdef TRIAGE_AVX512_BF16
        if constexpr (std::is_same_v<T, c10::BFloat16>) {
          if (half % 16 == 0) {  // GCC leaves the bf16 rounding scalar: 16 lanes per half at a time
            for (int64_t i = 0; i < half; i += 16) {
              const __m512 lo = load_bf16x16(xr + i), hi = load_bf16x16(xr + half + i);
              store_bf16x16(o + i, _mm512_fmadd_ps(hi, load_bf16x16(sn + i), _mm512_mul_ps(lo, load_bf16x16(c + i))));
              store_bf16x16(o + half + i,
                            _mm512_fmadd_ps(lo, load_bf16x16(sn + half + i), _mm512_mul_ps(hi, load_bf16x16(c + half + i))));
            }
            continue;
          }
        }
#endif
#pragma omp simd
        for (int64_t i = 0; i < half; ++i)
          o[i] = static_cast<T>(to_float(xr[i]) * to_float(c[i]) + to_float(xr[i + half]) * to_float(sn[i]));
#pragma omp simd
        for (int64_t i = half; i < d; ++i)
          o[i] = static_cast<T>(to_float(xr[i]) * to_float(c[i]) + to_float(xr[i - half]) * to_float(sn[i]));
      }
    }
  });
}

}  // namespace

// x: [T, heads, D] (any strides, the last dim contiguous); cos, sin: [T, 1, D] or [T, D] in x's
// dtype, sin signed as in rotary.py. Returns the rotated [T, heads, D], contiguous, computed in
// fp32 and rounded once.
at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu() && x.stride(2) == 1 && x.size(2) % 2 == 0, "x: [T, heads, even D]");
  TORCH_CHECK(cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type(), "dtype mismatch");
  const at::Tensor c = cos.reshape({x.size(0), x.size(2)}).contiguous();
  const at::Tensor sn = sin.reshape({x.size(0), x.size(2)}).contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  switch (x.scalar_type()) {
    case at::kFloat: rotary_impl<float>(x, c, sn, out); break;
    case at::kBFloat16: rotary_impl<c10::BFloat16>(x, c, sn, out); break;
    default: TORCH_CHECK(false, "rotary supports float32 and bfloat16");
  }
  return out;
}

// k, v: [T, Hkv, D] (any strides, each head's D contiguous); k_cache, v_cache: [num_blocks,
// block_size, Hkv, D] contiguous; slots: [T] int64 flat slots. A byte copy per head, so exact
// for any dtype: the two index_copy_ calls it replaces, in one call.
void write_kv(const at::Tensor& k, const at::Tensor& v, at::Tensor& k_cache, at::Tensor& v_cache,
              const at::Tensor& slots) {
  TORCH_CHECK(k.dim() == 3 && v.sizes() == k.sizes() && k.stride(2) == 1 && v.stride(2) == 1, "k, v: [T, Hkv, D]");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.dim() == 4, "contiguous 4-D caches");
  TORCH_CHECK(k.scalar_type() == k_cache.scalar_type() && v.scalar_type() == v_cache.scalar_type(), "dtype mismatch");
  TORCH_CHECK(k_cache.size(2) == k.size(1) && k_cache.size(3) == k.size(2) && v_cache.sizes() == k_cache.sizes(), "shape");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.numel() == k.size(0), "int64 slots, one per token");
  const at::Tensor sl = slots.contiguous();
  const int64_t tokens = k.size(0), heads = k.size(1);
  const int64_t capacity = k_cache.size(0) * k_cache.size(1);
  const int64_t elem = k.element_size(), row = k.size(2) * elem, cache_row = heads * row;
  const int64_t* sp = sl.data_ptr<int64_t>();
  for (int64_t t = 0; t < tokens; ++t) TORCH_CHECK(sp[t] >= 0 && sp[t] < capacity, "slot out of range");
  auto* kc = static_cast<char*>(k_cache.data_ptr());
  auto* vc = static_cast<char*>(v_cache.data_ptr());
  const auto* kp = static_cast<const char*>(k.data_ptr());
  const auto* vp = static_cast<const char*>(v.data_ptr());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      std::memcpy(kc + sp[t] * cache_row + h * row, kp + (t * k.stride(0) + h * k.stride(1)) * elem, row);
      std::memcpy(vc + sp[t] * cache_row + h * row, vp + (t * v.stride(0) + h * v.stride(1)) * elem, row);
    }
  }
}

namespace {

template <typename T>
void argmax_rows_impl(const at::Tensor& x, at::Tensor& out) {
  constexpr int64_t kChunk = 64;
  const int64_t rows = x.size(0), n = x.size(1), chunks = (n + kChunk - 1) / kChunk;
  const T* xp = x.data_ptr<T>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    // One vectorised pass for every chunk's max, then a scalar scan of the first chunk that
    // holds the row's max: the first index of the max, as torch's max(dim) returns it.
    std::vector<float> chunk_max(chunks);
    for (int64_t r = begin; r < end; ++r) {
      const T* row = xp + r * n;
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < chunks; ++c) {
        const T* p = row + c * kChunk;
        const int64_t len = std::min(kChunk, n - c * kChunk);
        float cm = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : cm)
        for (int64_t i = 0; i < len; ++i) cm = std::max(cm, to_float(p[i]));
        chunk_max[c] = cm;
        best = std::max(best, cm);
      }
      int64_t idx = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        if (chunk_max[c] == best) {
          idx = c * kChunk;
          while (to_float(row[idx]) != best) ++idx;
          break;
        }
      }
      op[r] = idx;
    }
  });
}

}  // namespace

// x: [rows, n] float32 or bfloat16. Returns int64 [rows]: each row's first index of its max
// (greedy sampling straight from bf16 logits, without an fp32 copy of them).
at::Tensor argmax_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu() && x.size(1) > 0, "x: [rows, n] on the CPU");
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  switch (x.scalar_type()) {
    case at::kFloat: argmax_rows_impl<float>(xc, out); break;
    case at::kBFloat16: argmax_rows_impl<c10::BFloat16>(xc, out); break;
    default: TORCH_CHECK(false, "argmax_rows supports float32 and bfloat16");
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode_attention", &paged_decode_attention, "Paged decode attention straight from the KV cache");
  m.def("rms_norm", &rms_norm, "One-pass RMSNorm with fp32 accumulation");
  m.def("rotary", &rotary, "Rotate-half RoPE on strided heads, fp32 math, one rounding");
  m.def("argmax_rows", &argmax_rows, "First index of each row's max");
  m.def("write_kv", &write_kv, "Copy the step's K/V rows into their paged cache slots");
}
