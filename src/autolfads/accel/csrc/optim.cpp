// The population's Adam step in C++ for float32 CPU parameters: one pass over a parameter, its
// gradient and both moments, where the PyTorch path (train/optim.py, PopulationAdam.step) makes
// about fifteen. Part of the same extension as gru_loops.cpp, which registers it
// (`register_optim`).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "tensors.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

using autolfads::check_contiguous_float;
using autolfads::for_worker_stretches;

namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per parallel task

// One worker's stretch of n elements (restrict parameters: GCC vectorises it).
void adam_stretch(int64_t n, float* __restrict__ p, const float* __restrict__ g,
                  float* __restrict__ m, float* __restrict__ v, float clip, float step_size,
                  float denom_scale, float b1, float b2, float eps) {
  const float c1 = 1.0f - b1, c2 = 1.0f - b2;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * clip;
    const float mi = m[i] * b1 + gi * c1;
    const float vi = v[i] * b2 + gi * gi * c2;
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * mi / (std::sqrt(vi) / denom_scale + eps);
  }
}

}  // namespace

// Adam on one parameter of K workers, in place. p, grad, exp_avg, exp_avg_sq: contiguous (K m, ...)
// float32; coef (K, 4) float32 rows [ok, clip, step_size, denom_scale] per worker: a worker with
// ok = 0 (a non-finite gradient) is left as it is; the others take
//     g = grad clip;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//     p -= step_size m / (sqrt(v) / denom_scale + eps).
void adam_step(at::Tensor p, const at::Tensor& grad, at::Tensor exp_avg, at::Tensor exp_avg_sq,
               const at::Tensor& coef, double b1, double b2, double eps) {
  check_contiguous_float(p, "p");
  check_contiguous_float(grad, "grad");
  check_contiguous_float(exp_avg, "exp_avg");
  check_contiguous_float(exp_avg_sq, "exp_avg_sq");
  check_contiguous_float(coef, "coef");
  TORCH_CHECK(grad.numel() == p.numel() && exp_avg.numel() == p.numel() &&
                  exp_avg_sq.numel() == p.numel(),
              "grad, exp_avg, exp_avg_sq: expected as many elements as p");
  TORCH_CHECK(coef.dim() == 2 && coef.size(1) == 4, "coef: expected (K, 4)");
  const int64_t k = coef.size(0);
  TORCH_CHECK(k > 0 && p.numel() % k == 0, "p: expected K equal blocks of elements");
  const int64_t per = p.numel() / k;
  if (per == 0) return;
  const float* c = coef.data_ptr<float>();
  float *pp = p.data_ptr<float>(), *m = exp_avg.data_ptr<float>(), *v = exp_avg_sq.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  const float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
  const float feps = static_cast<float>(eps);
  for_worker_stretches(p.numel(), per, kGrain, [&](int64_t w, int64_t i, int64_t end) {
    const float* cw = c + 4 * w;
    if (cw[0] != 0.0f)
      adam_stretch(end - i, pp + i, g + i, m + i, v + i, cw[1], cw[2], cw[3], fb1, fb2, feps);
  });
}

void register_optim(pybind11::module_& m) {
  m.def("adam_step", &adam_step, "one population Adam step on one parameter, in place");
}
