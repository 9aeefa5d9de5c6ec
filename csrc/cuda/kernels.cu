// CUDA kernels of the two passes. Per-element math: common/qlab_math.h (shared with the CPU build).
//
// Grid-stride loops over packs of VEC = 4 elements (16-byte loads of fp32 buffers, 8-byte loads of
// 16-bit ones) when every pointer is aligned, single elements otherwise. Per-step scalars come from
// the `sc` device pointer, never from the host. The probe reduction is deterministic: fp32 per-thread
// sums, a fixed shared-memory tree per block, one fp32 partial row per block, then one block sums the
// rows in a fixed order in fp64. No atomics. Built without --use_fast_math and with --fmad=false.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "../common/qlab_math.h"
#include "qlab_cuda.h"

namespace qlab::cuda {
namespace {

constexpr int THREADS = 256;
constexpr int VEC = 4;
// Packs per thread in the probe grid: bounds the fp32 per-thread sums to 32 terms.
constexpr int64_t PROBE_PACKS_PER_THREAD = 8;
constexpr int64_t UPDATE_MAX_BLOCKS = 65535;
constexpr int REDUCE_THREADS = 512;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }

template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, class T>
__device__ __forceinline__ void load(const T* p, int64_t i, float* out) {
  Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p + i);
#pragma unroll
  for (int k = 0; k < N; ++k) out[k] = to_f(pk.v[k]);
}

template <int N, class T>
__device__ __forceinline__ void store(T* p, int64_t i, const float* in) {
  Pack<T, N> pk;
#pragma unroll
  for (int k = 0; k < N; ++k) pk.v[k] = from_f<T>(in[k]);
  *reinterpret_cast<Pack<T, N>*>(p + i) = pk;
}

// One pack of N elements at i: loads, probe math, stores, adds to acc.
template <int KIND, int N, class W, class G>
__device__ __forceinline__ void probe_pack(const Launch& a, const Step& st, int64_t i, float* acc) {
  float th[N], g[N], s0[N] = {}, s1[N] = {}, out[N];
  load<N>(a.master, i, th);
  load<N>(static_cast<const G*>(a.grad), i, g);
  if (KIND != KIND_SGD) load<N>(a.s0, i, s0);
  if (KIND == KIND_ADAM) load<N>(a.s1, i, s1);
#pragma unroll
  for (int k = 0; k < N; ++k) {
    float r[RED_LEN];
    out[k] = probe_elem<KIND>(a.c, st, a.dir, th[k], g[k], s0[k], s1[k], r);
#pragma unroll
    for (int j = 0; j < RED_LEN; ++j) acc[j] += r[j];
  }
  store<N>(static_cast<W*>(a.work), i, out);
  if (KIND != KIND_SGD) store<N>(a.s0, i, s0);
  if (KIND == KIND_ADAM) store<N>(a.s1, i, s1);
}

template <int KIND, int N, class W, class G>
__global__ void __launch_bounds__(THREADS) probe_kernel(Launch a, float* partials) {
  if (!(a.sc[SC_OK] > 0.0f)) return;  // write nothing at all; the sum kernel writes zeros
  Step st = make_step(a.sc);
  float acc[RED_LEN] = {};
  const int64_t npack = a.n / N;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t pk = tid; pk < npack; pk += stride) probe_pack<KIND, N, W, G>(a, st, pk * N, acc);
  for (int64_t i = npack * N + tid; i < a.n; i += stride) probe_pack<KIND, 1, W, G>(a, st, i, acc);

  __shared__ float sh[RED_LEN][THREADS];
#pragma unroll
  for (int j = 0; j < RED_LEN; ++j) sh[j][threadIdx.x] = acc[j];
  __syncthreads();
  for (int w = THREADS / 2; w > 0; w >>= 1) {  // fixed tree: the same order on every run
    if (threadIdx.x < w) {
#pragma unroll
      for (int j = 0; j < RED_LEN; ++j) sh[j][threadIdx.x] += sh[j][threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x < RED_LEN) partials[int64_t(blockIdx.x) * RED_LEN + threadIdx.x] = sh[threadIdx.x][0];
}

// One block: fp64 strided sums of the partial rows, then a fixed tree; zeros when not ok.
__global__ void __launch_bounds__(REDUCE_THREADS) sum_partials_kernel(const float* partials,
                                                                      int64_t rows, const float* sc,
                                                                      float* red) {
  const bool ok = sc[SC_OK] > 0.0f;
  double acc[RED_LEN] = {};
  if (ok) {
    for (int64_t r = threadIdx.x; r < rows; r += REDUCE_THREADS) {
#pragma unroll
      for (int j = 0; j < RED_LEN; ++j) acc[j] += double(partials[r * RED_LEN + j]);
    }
  }
  __shared__ double sh[RED_LEN][REDUCE_THREADS];
#pragma unroll
  for (int j = 0; j < RED_LEN; ++j) sh[j][threadIdx.x] = acc[j];
  __syncthreads();
  for (int w = REDUCE_THREADS / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) {
#pragma unroll
      for (int j = 0; j < RED_LEN; ++j) sh[j][threadIdx.x] += sh[j][threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x < RED_LEN) red[threadIdx.x] = ok ? float(sh[threadIdx.x][0]) : 0.0f;
}

template <int KIND, int N, class W, class G>
__device__ __forceinline__ void update_pack(const Launch& a, const Step& st, int64_t i) {
  float x[N], g[N] = {}, s0[N] = {}, s1[N] = {}, out[N];
  load<N>(a.master, i, x);
  if (a.load_grad) load<N>(static_cast<const G*>(a.grad), i, g);
  if (KIND != KIND_SGD) load<N>(a.s0, i, s0);
  if (KIND == KIND_ADAM) load<N>(a.s1, i, s1);
#pragma unroll
  for (int k = 0; k < N; ++k)
    out[k] = update_elem<KIND>(a.c, st, a.dir, a.inplace, x[k], g[k], s0[k], s1[k]);
  store<N>(a.master, i, out);
  if (!a.inplace) store<N>(static_cast<W*>(a.work), i, out);
}

template <int KIND, int N, class W, class G>
__global__ void __launch_bounds__(THREADS) update_kernel(Launch a) {
  if (!(a.sc[SC_OK] > 0.0f)) return;
  Step st = make_step(a.sc);
  set_undo(st, a.c, KIND, a.dir);
  const int64_t npack = a.n / N;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t pk = tid; pk < npack; pk += stride) update_pack<KIND, N, W, G>(a, st, pk * N);
  for (int64_t i = npack * N + tid; i < a.n; i += stride) update_pack<KIND, 1, W, G>(a, st, i);
}

bool aligned(const Launch& a) {
  auto ok = [](const void* p, int bytes) {
    return p == nullptr || reinterpret_cast<uintptr_t>(p) % (uintptr_t(bytes) * VEC) == 0;
  };
  const int wb = a.work_dt == DT_F32 ? 4 : 2, gb = a.grad_dt == DT_F32 ? 4 : 2;
  return ok(a.master, 4) && ok(a.work, wb) && ok(a.grad, gb) && ok(a.s0, 4) && ok(a.s1, 4);
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Calls f.template operator()<KIND, W, G>() for the segment's kind and (work, grad) dtypes; grad is
// fp32 or the work dtype (the glue checks this).
template <class F>
void dispatch(const Launch& a, F&& f) {
  auto by_dtype = [&](auto kind) {
    constexpr int K = decltype(kind)::value;
    const bool gf32 = a.grad_dt == DT_F32;
    switch (a.work_dt) {
      case DT_BF16:
        return gf32 ? f.template operator()<K, __nv_bfloat16, float>()
                    : f.template operator()<K, __nv_bfloat16, __nv_bfloat16>();
      case DT_F16:
        return gf32 ? f.template operator()<K, __half, float>()
                    : f.template operator()<K, __half, __half>();
      default:
        return f.template operator()<K, float, float>();
    }
  };
  switch (a.kind) {
    case KIND_MOMENTUM: return by_dtype(std::integral_constant<int, KIND_MOMENTUM>{});
    case KIND_ADAM: return by_dtype(std::integral_constant<int, KIND_ADAM>{});
    default: return by_dtype(std::integral_constant<int, KIND_SGD>{});
  }
}

struct ProbeLauncher {
  const Launch& a;
  float* partials;
  int64_t blocks;
  cudaStream_t stream;
  bool vec;
  template <int K, class W, class G>
  void operator()() const {
    if (vec) {
      probe_kernel<K, VEC, W, G><<<unsigned(blocks), THREADS, 0, stream>>>(a, partials);
    } else {
      probe_kernel<K, 1, W, G><<<unsigned(blocks), THREADS, 0, stream>>>(a, partials);
    }
  }
};

struct UpdateLauncher {
  const Launch& a;
  cudaStream_t stream;
  bool vec;
  template <int K, class W, class G>
  void operator()() const {
    const int64_t per = vec ? VEC : 1;
    const auto blocks = unsigned(std::max<int64_t>(
        1, std::min(cdiv(cdiv(a.n, per), THREADS), UPDATE_MAX_BLOCKS)));
    if (vec) {
      update_kernel<K, VEC, W, G><<<blocks, THREADS, 0, stream>>>(a);
    } else {
      update_kernel<K, 1, W, G><<<blocks, THREADS, 0, stream>>>(a);
    }
  }
};

}  // namespace

int64_t probe_blocks(int64_t n) {
  // Assumes the vector path (VEC elements a pack); the scalar path then runs 4x the packs per
  // thread. Either way the count, so the reduction order, depends on n only.
  return std::max<int64_t>(1, cdiv(cdiv(n, VEC), THREADS * PROBE_PACKS_PER_THREAD));
}

cudaError_t launch_probe(const Launch& a, float* partials, float* red, cudaStream_t stream) {
  const int64_t blocks = probe_blocks(a.n);
  if (a.n > 0) dispatch(a, ProbeLauncher{a, partials, blocks, stream, aligned(a)});
  sum_partials_kernel<<<1, REDUCE_THREADS, 0, stream>>>(partials, a.n > 0 ? blocks : 0, a.sc, red);
  return cudaGetLastError();
}

cudaError_t launch_update(const Launch& a, cudaStream_t stream) {
  if (a.n > 0) dispatch(a, UpdateLauncher{a, stream, aligned(a)});
  return cudaGetLastError();
}

}  // namespace qlab::cuda
