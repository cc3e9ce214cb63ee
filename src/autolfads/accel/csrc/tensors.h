// Tensor checks, strided row access and the per-worker parallel loop shared by the C++ sources of the extension
// (gru_loops.cpp, elementwise.cpp, optim.cpp). fused.py puts a digest of every header in the
// build flags, so that a change here rebuilds them.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace autolfads {

inline void check_contiguous_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), name,
              ": expected a contiguous float32 CPU tensor");
}

// A (K, B, T, n) float32 CPU tensor read through its strides, with unit stride in its last dim
// (batch-major, or a transposed view of time-major storage): row (k, b, t) -> pointer.
struct Rows {
  const float* data;
  int64_t K, B, T, n, sk, sb, st;
  Rows(const at::Tensor& x, const char* name) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu() && x.dim() == 4 &&
                    x.stride(3) == 1,
                name, ": expected a float32 CPU (K, B, T, n) tensor with unit last stride");
    data = x.data_ptr<float>();
    K = x.size(0), B = x.size(1), T = x.size(2), n = x.size(3);
    sk = x.stride(0), sb = x.stride(1), st = x.stride(2);
  }
  const float* at(int64_t k, int64_t b, int64_t t) const { return data + k * sk + b * sb + t * st; }
};

// Calls body(w, begin, end) in parallel (`grain` elements per task) for stretches [begin, end)
// covering `total` elements, each stretch inside worker w's `per` contiguous elements
// (w = begin / per): per-worker values are looked up once per stretch, not per element.
template <typename F>
void for_worker_stretches(int64_t total, int64_t per, int64_t grain, const F& body) {
  at::parallel_for(0, total, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t w = i / per, stop = std::min(end, (w + 1) * per);
      body(w, i, stop);
      i = stop;
    }
  });
}

}  // namespace autolfads
