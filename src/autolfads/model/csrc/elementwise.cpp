// Elementwise work of a training step in C++, for float32 CPU tensors: the dropout and
// coordinated-dropout masks (random numbers included) and the Poisson reconstruction loss with its
// gradient, each one pass over memory where PyTorch makes several. Part of the same extension as
// gru_loops.cpp, which registers these functions (`register_elementwise`).
//
// Random numbers come from a counter-based hash of (seed, element index), so a mask is the same
// for a seed whatever the thread count, and every function here that draws numbers for a (K, ...)
// tensor draws exactly those of `uniform_fill` on a tensor of that shape.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "arith.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

using autolfads::fast_exp;

namespace {

void check_contiguous_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), name,
              ": expected a contiguous float32 CPU tensor");
}

// ---------------------------------------------------------------------------------------------
// Arithmetic.

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr int64_t kGrain = 1 << 16;  // elements per parallel task (at::parallel_for grain)

// Uniform [0, 1) number, 24 random bits, of element i: splitmix64 of base + i * golden, where
// base = seed * golden. Written so that compilers vectorise loops of it.
inline float uniform_at(uint64_t base, int64_t i) {
  uint64_t z = base + static_cast<uint64_t>(i) * kGolden;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

inline uint64_t seed_base(int64_t seed) { return static_cast<uint64_t>(seed) * kGolden; }

// Per-worker rates (K,) as a vector, checked.
std::vector<float> worker_rates(const at::Tensor& rate) {
  check_contiguous_float(rate, "rate");
  TORCH_CHECK(rate.dim() == 1, "rate: expected (K,)");
  const float* r = rate.data_ptr<float>();
  return std::vector<float>(r, r + rate.numel());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Random numbers for masks: x (contiguous float32) gets uniform [0, 1) values from the hash of
// (seed, element index): parallel, vectorised, and the same for a seed whatever the thread count
// (torch's CPU generator is a sequential Mersenne twister, ~9 ns per number here).
void uniform_fill(at::Tensor x, int64_t seed) {
  check_contiguous_float(x, "x");
  float* out = x.data_ptr<float>();
  const uint64_t base = seed_base(seed);
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = uniform_at(base, i);
  });
}

// ---------------------------------------------------------------------------------------------
// Inverted-dropout mask, per-worker rate: out (K, ...) gets 1 / (1 - rate_k) where element i is
// kept (u_i < 1 - rate_k, u_i = uniform_fill's number) and 0 where it is dropped; a worker with
// rate >= 1 drops everything. keep and scale are the PyTorch path's float32 values
// (keep = 1 - rate, scale = 1 / max(keep, 1e-6)), so the mask equals (u < keep) / keep there.
void dropout_mask(at::Tensor out, const at::Tensor& rate, int64_t seed) {
  check_contiguous_float(out, "out");
  const std::vector<float> rates = worker_rates(rate);
  const int64_t k = static_cast<int64_t>(rates.size());
  TORCH_CHECK(out.dim() >= 1 && out.size(0) == k, "out: expected (K, ...) with K = rate.numel()");
  const int64_t per = k > 0 ? out.numel() / k : 0;  // elements per worker
  if (per == 0) return;
  std::vector<float> keep(k), scale(k);
  for (int64_t w = 0; w < k; ++w) {
    keep[w] = rates[w] >= 1.0f ? -1.0f : 1.0f - rates[w];  // -1: no u is below it
    scale[w] = 1.0f / std::max(1.0f - rates[w], 1e-6f);
  }
  float* o = out.data_ptr<float>();
  const uint64_t base = seed_base(seed);
  at::parallel_for(0, out.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {  // one stretch per worker met in [begin, end)
      const int64_t w = i / per;
      const int64_t stop = std::min(end, (w + 1) * per);
      const float kp = keep[w], s = scale[w];
      for (; i < stop; ++i) o[i] = uniform_at(base, i) < kp ? s : 0.0f;
    }
  });
}

namespace {

// A stretch of n elements of cd_masks (see there) from x to xo and g; i0: the stretch's first
// index in the (K, B, T, N) input, which numbers its random numbers.
void cd_stretch(const float* __restrict__ x, float* __restrict__ xo, bool* __restrict__ g,
                int64_t n, uint64_t base, int64_t i0, float rate, float denom) {
  const bool no_cd = rate <= 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    const bool keep = uniform_at(base, i0 + j) >= rate;
    xo[j] = x[j] * (keep ? 1.0f : 0.0f) / denom;
    g[j] = !keep || no_cd;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Coordinated dropout of the encoder input, both outputs in one pass. data (B, T, N) is every
// worker's input (the same for all K); element i of the (K, B, T, N) input is kept when
// u_i >= rate_k (u_i = uniform_fill's number for a (K, B, T, N) tensor), as in
//     x_cd = data * keep / max(1 - rate_k, 1e-6)                          (K, B, T, N)
//     grad_mask = !keep || rate_k <= 0, padded with true to (K, B, T_rec, N_rec)
// (gradient only where the input was dropped; everywhere for a worker without CD and on entries
// the encoder never sees). Work goes in stretches of one worker's contiguous elements.
std::tuple<at::Tensor, at::Tensor> cd_masks(const at::Tensor& data, const at::Tensor& rate,
                                            int64_t seed, int64_t t_rec, int64_t n_rec) {
  check_contiguous_float(data, "data");
  TORCH_CHECK(data.dim() == 3, "data: expected (B, T, N)");
  const std::vector<float> rates = worker_rates(rate);
  const int64_t k = static_cast<int64_t>(rates.size());
  const int64_t b = data.size(0), t = data.size(1), n = data.size(2), per = data.numel();
  TORCH_CHECK(t_rec >= t && n_rec >= n, "the recon grid must cover the encoder input's");
  std::vector<float> denom(k);
  for (int64_t w = 0; w < k; ++w) denom[w] = std::max(1.0f - rates[w], 1e-6f);
  const auto flags = data.options().dtype(at::kBool);
  at::Tensor x_cd = at::empty({k, b, t, n}, data.options());
  at::Tensor grad_mask = at::empty({k, b, t_rec, n_rec}, flags);
  const bool padded = t_rec != t || n_rec != n;
  at::Tensor dropped = padded ? at::empty({k, b, t, n}, flags) : grad_mask;
  const float* x = data.data_ptr<float>();
  float* xo = x_cd.data_ptr<float>();
  bool* g = dropped.data_ptr<bool>();
  const uint64_t base = seed_base(seed);
  if (per > 0) {
    at::parallel_for(0, k * per, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {  // one stretch per worker met in [begin, end)
        const int64_t w = i / per, stop = std::min(end, (w + 1) * per);
        cd_stretch(x + (i - w * per), xo + i, g + i, stop - i, base, i, rates[w], denom[w]);
        i = stop;
      }
    });
  }
  if (padded) {  // entries the encoder never sees (forward-prediction steps, held-out channels)
    grad_mask.fill_(true);
    grad_mask.narrow(2, 0, t).narrow(3, 0, n).copy_(dropped);
  }
  return {x_cd, grad_mask};
}

namespace {

// One block of n elements of poisson_nll (see there): adds to sum and count, writes grad_out.
// Sums go to kLanes partial sums so that the loop is vectorised (a single running sum is a
// sequential dependency the compiler must keep without -ffast-math).
template <bool kMask, bool kGrad>
void poisson_block(const float* __restrict__ p, const float* __restrict__ y,
                   const float* __restrict__ lgy, const float* __restrict__ mk,
                   const uint8_t* __restrict__ gm, float* __restrict__ go, int64_t n, float cap,
                   float scale, double& sum, double& count) {
  constexpr int64_t kLanes = 16;
  double acc[kLanes] = {}, cnt[kLanes] = {};
  auto element = [&](int64_t j, double& a, double& c) {
    const float raw = p[j];
    const float pc = raw > cap ? cap : raw;  // clamp(max=cap): zero gradient above
    const float e = fast_exp(pc);
    a += static_cast<double>((e - y[j] * pc + lgy[j]) * mk[j]);
    c += static_cast<double>(mk[j]);
    if constexpr (kGrad) go[j] = raw > cap ? 0.0f : (e - y[j]) * mk[j] * scale;
  };
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) element(j + l, acc[l], cnt[l]);
  for (; j < n; ++j) element(j, acc[0], cnt[0]);
  if constexpr (kMask && kGrad)  // a loop of its own: vectorised (bytes and floats in one are not)
    for (j = 0; j < n; ++j) go[j] = gm[j] != 0 ? go[j] : 0.0f;
  for (int64_t l = 0; l < kLanes; ++l) {
    sum += acc[l];
    count += cnt[l];
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Poisson reconstruction loss of K workers, one pass. With p = min(log_rate, max_log) and
// lgy = lgamma(y + 1) (computed once by the caller, shared over workers):
//     nll = exp(p) - y p + lgy;   sums_k = sum_i nll_i m_ki;   counts_k = sum_i m_ki
// where m (loss mask) is (K, M) or (1, M) and y, lgy are (M) for every worker. When grad_out
// (K, M) is given it gets the gradient of sums_k w.r.t. log_rate, times grad_scale_k if given:
//     (exp(p) - y) m_ki [grad_mask_ki] [log_rate <= max_log]
// Each worker's M elements are cut into fixed blocks, summed in double per block and the blocks
// added in order: the sums do not depend on the thread count.
std::tuple<at::Tensor, at::Tensor> poisson_nll(const at::Tensor& log_rate, const at::Tensor& y,
                                               const at::Tensor& lgy, const at::Tensor& loss_mask,
                                               const std::optional<at::Tensor>& grad_mask,
                                               const std::optional<at::Tensor>& grad_out,
                                               const std::optional<at::Tensor>& grad_scale,
                                               double max_log) {
  check_contiguous_float(log_rate, "log_rate");
  check_contiguous_float(y, "y");
  check_contiguous_float(lgy, "lgy");
  check_contiguous_float(loss_mask, "loss_mask");
  const int64_t k = log_rate.size(0), m = k > 0 ? log_rate.numel() / k : 0;
  TORCH_CHECK(y.numel() == m && lgy.numel() == m, "y, lgy: expected M elements per worker");
  const bool shared_mask = loss_mask.numel() == m;
  TORCH_CHECK(shared_mask || loss_mask.numel() == k * m, "loss_mask: expected (1|K, M)");
  const uint8_t* gm = nullptr;
  if (grad_mask) {
    TORCH_CHECK(grad_mask->scalar_type() == at::kBool && grad_mask->is_contiguous() &&
                    grad_mask->numel() == k * m,
                "grad_mask: expected a contiguous bool (K, M) tensor");
    gm = reinterpret_cast<const uint8_t*>(grad_mask->data_ptr<bool>());
  }
  float* go = nullptr;
  if (grad_out) {
    check_contiguous_float(*grad_out, "grad_out");
    TORCH_CHECK(grad_out->numel() == k * m, "grad_out: expected (K, M)");
    go = grad_out->data_ptr<float>();
  }
  std::vector<float> scale(k, 1.0f);
  if (grad_scale) scale = worker_rates(*grad_scale);
  TORCH_CHECK(static_cast<int64_t>(scale.size()) == k, "grad_scale: expected (K,)");

  const float* p = log_rate.data_ptr<float>();
  const float* yy = y.data_ptr<float>();
  const float* lg = lgy.data_ptr<float>();
  const float* lm = loss_mask.data_ptr<float>();
  const float cap = static_cast<float>(max_log);
  constexpr int64_t kBlock = 8192;
  const int64_t blocks = (m + kBlock - 1) / kBlock;
  std::vector<double> part_sum(k * blocks, 0.0), part_count(k * blocks, 0.0);

  // one item per (worker, block); kMask: grad_mask given; kGrad: grad_out given
  auto run = [&](auto kMask, auto kGrad) {
    at::parallel_for(0, k * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t w = item / blocks, j0 = (item % blocks) * kBlock;
        const int64_t off = w * m + j0;
        const float* mk = (shared_mask ? lm : lm + w * m) + j0;
        poisson_block<decltype(kMask)::value, decltype(kGrad)::value>(
            p + off, yy + j0, lg + j0, mk, gm ? gm + off : nullptr, go ? go + off : nullptr,
            std::min(m - j0, kBlock), cap, scale[w], part_sum[item], part_count[item]);
      }
    });
  };
  using T = std::true_type;
  using F = std::false_type;
  if (go && gm) run(T{}, T{});
  else if (go) run(F{}, T{});
  else run(F{}, F{});

  at::Tensor sums = at::empty({k}, log_rate.options());
  at::Tensor counts = at::empty({k}, log_rate.options());
  float* so = sums.data_ptr<float>();
  float* co = counts.data_ptr<float>();
  for (int64_t w = 0; w < k; ++w) {
    double s = 0.0, c = 0.0;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      s += part_sum[w * blocks + blk];
      c += part_count[w * blocks + blk];
    }
    so[w] = static_cast<float>(s);
    co[w] = static_cast<float>(c);
  }
  return {sums, counts};
}

void register_elementwise(pybind11::module_& m) {
  m.def("uniform_fill", &uniform_fill, "uniform [0, 1) numbers from a seed, in place");
  m.def("dropout_mask", &dropout_mask, "inverted-dropout mask (K, ...), per-worker rate, in place");
  m.def("cd_masks", &cd_masks, "coordinated-dropout input and gradient mask, one pass");
  m.def("poisson_nll", &poisson_nll, "Poisson NLL sums and counts per worker, optional gradient",
        pybind11::arg("log_rate"), pybind11::arg("y"), pybind11::arg("lgy"),
        pybind11::arg("loss_mask"), pybind11::arg("grad_mask") = pybind11::none(),
        pybind11::arg("grad_out") = pybind11::none(), pybind11::arg("grad_scale") = pybind11::none(),
        pybind11::arg("max_log") = 20.0);
}
