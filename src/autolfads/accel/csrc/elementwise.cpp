// Elementwise work of a training step in C++, for float32 CPU tensors: the dropout and
// coordinated-dropout masks (random numbers included), the controller's lagged, dropped-out input
// with its chain rule, and the Poisson reconstruction loss with its gradient, each one pass over
// memory where PyTorch makes several. Part of the same extension as gru_loops.cpp, which
// registers these functions (`register_elementwise`).
//
// Random numbers come from a counter-based hash of (seed, element index), so a mask is the same
// for a seed whatever the thread count, and every function here that draws numbers for a (K, ...)
// tensor draws exactly those of `uniform_fill` on a tensor of that shape.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "arith.h"
#include "tensors.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

using autolfads::check_contiguous_float;
using autolfads::fast_exp;
using autolfads::for_worker_stretches;
using autolfads::Rows;

namespace {

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

// Per-worker keep threshold and scale of inverted dropout (see dropout_mask).
struct WorkerKeep {
  std::vector<float> keep, scale;
  explicit WorkerKeep(const std::vector<float>& rates) : keep(rates.size()), scale(rates.size()) {
    for (size_t w = 0; w < rates.size(); ++w) {
      keep[w] = rates[w] >= 1.0f ? -1.0f : 1.0f - rates[w];  // -1: no u is below it
      scale[w] = 1.0f / std::max(1.0f - rates[w], 1e-6f);
    }
  }
};

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
  const WorkerKeep wk(rates);
  float* o = out.data_ptr<float>();
  const uint64_t base = seed_base(seed);
  for_worker_stretches(out.numel(), per, kGrain, [&](int64_t w, int64_t begin, int64_t end) {
    const float kp = wk.keep[w], s = wk.scale[w];
    for (int64_t i = begin; i < end; ++i) o[i] = uniform_at(base, i) < kp ? s : 0.0f;
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
    for_worker_stretches(k * per, per, kGrain, [&](int64_t w, int64_t begin, int64_t end) {
      cd_stretch(x + (begin - w * per), xo + begin, g + begin, end - begin, base, begin, rates[w],
                 denom[w]);
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

namespace {

// n elements dst = src * mask, the mask of element i0 + j being dropout_mask's number for it
// (scale if uniform_at(base, i0 + j) < keep, else 0); dst = src when kDrop is false.
template <bool kDrop>
void masked_copy(int64_t n, const float* __restrict__ src, float* __restrict__ dst, uint64_t base,
                 int64_t i0, float keep, float scale) {
  for (int64_t j = 0; j < n; ++j) {
    if constexpr (kDrop) dst[j] = src[j] * (uniform_at(base, i0 + j) < keep ? scale : 0.0f);
    else dst[j] = src[j];
  }
}

// The checked lag and per-worker keep values of lag_dropout_* for K workers.
WorkerKeep lag_keep(const at::Tensor& rate, int64_t K, int64_t lag) {
  TORCH_CHECK(lag >= 0, "lag: expected >= 0");
  WorkerKeep wk(worker_rates(rate));
  TORCH_CHECK(static_cast<int64_t>(wk.keep.size()) == K, "rate: expected (K,)");
  return wk;
}

// One half-row of lag_dropout_*: dst = src * mask (a zero row where src is null).
void lag_half(const float* src, float* dst, int64_t n, bool training, uint64_t base, int64_t i0,
              const WorkerKeep& wk, int64_t w) {
  if (src == nullptr) std::fill(dst, dst + n, 0.0f);
  else if (training) masked_copy<true>(n, src, dst, base, i0, wk.keep[w], wk.scale[w]);
  else masked_copy<false>(n, src, dst, base, i0, 0.0f, 0.0f);
}

// Calls row(k, b, t) for every (k, b, t) < (K, B, T), in parallel over items (worker, block of
// trials). In an item the rows go in the memory order of the tensor read: steps outer when it is
// time-major (one step's trials adjacent; a block of rows of H floats is about a 4 KB page), else
// trials outer. (k, b, t) order on a time-major view jumps a whole step per row: 3-4x slower at
// K 8, B 100, T 100, H 32.
template <typename F>
void for_rows(int64_t K, int64_t B, int64_t T, int64_t H, bool time_major, const F& row) {
  const int64_t nb = std::max<int64_t>(1, std::min<int64_t>(B, 1024 / std::max<int64_t>(H, 1)));
  const int64_t blocks = (B + nb - 1) / nb;
  at::parallel_for(0, K * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / blocks, b0 = (item % blocks) * nb, b1 = std::min(B, b0 + nb);
      if (time_major) {
        for (int64_t t = 0; t < T; ++t)
          for (int64_t b = b0; b < b1; ++b) row(k, b, t);
      } else {
        for (int64_t b = b0; b < b1; ++b)
          for (int64_t t = 0; t < T; ++t) row(k, b, t);
      }
    }
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The controller's input, lagged encoder states with dropout, one pass. fwd, bwd (K, B, T_enc, H)
// (any strides, unit last one) -> out, stored time-major (K, T_rec, B, 2H) contiguous (the
// controller's loop reads one step's rows at a time), T_rec >= T_enc:
//     out[k, t, b, :H] = fwd[k, b, t - lag] if lag <= t < T_enc, else 0
//     out[k, t, b, H:] = bwd[k, b, t + lag] if t + lag < T_enc, else 0
// times, when training, the mask dropout_mask makes for the (K, B, T_rec, 2H) shape with rate
// and seed (element (k, b, t, j), numbered in that batch-major order as i, draws
// uniform_at(base, i)): bit for bit the lagged (K, B, T_rec, 2H) tensor times that mask.
void lag_dropout_forward(const at::Tensor& fwd, const at::Tensor& bwd, int64_t lag,
                         const at::Tensor& rate, int64_t seed, bool training, at::Tensor out) {
  const Rows f(fwd, "fwd"), bw(bwd, "bwd");
  check_contiguous_float(out, "out");
  const int64_t K = f.K, B = f.B, T = f.T, H = f.n;
  TORCH_CHECK(bw.K == K && bw.B == B && bw.T == T && bw.n == H, "bwd: expected fwd's shape");
  TORCH_CHECK(out.dim() == 4 && out.size(0) == K && out.size(2) == B && out.size(1) >= T &&
                  out.size(3) == 2 * H,
              "out: expected (K, T_rec, B, 2H) with T_rec >= T_enc");
  const WorkerKeep wk = lag_keep(rate, K, lag);
  const int64_t T_rec = out.size(1);
  float* o = out.data_ptr<float>();
  const uint64_t base = seed_base(seed);
  for_rows(K, B, T_rec, H, f.sb < f.st, [&](int64_t k, int64_t b, int64_t t) {
    const int64_t i0 = ((k * B + b) * T_rec + t) * 2 * H;  // element (k, b, t, 0)'s number
    float* dst = o + ((k * T_rec + t) * B + b) * 2 * H;      // and its place
    const float* src_f = t >= lag && t < T ? f.at(k, b, t - lag) : nullptr;
    const float* src_b = t + lag < T ? bw.at(k, b, t + lag) : nullptr;
    lag_half(src_f, dst, H, training, base, i0, wk, k);
    lag_half(src_b, dst + H, H, training, base, i0 + H, wk, k);
  });
}

// Its chain rule, one pass: g_out (K, B, T_rec, 2H) (any strides, unit last one) -> g_fwd, g_bwd
// (K, B, T_enc, H) contiguous, every element written:
//     g_fwd[k, b, s] = g_out[k, b, s + lag, :H] m   if s + lag < T_enc, else 0
//     g_bwd[k, b, s] = g_out[k, b, s - lag, H:] m   if s >= lag, else 0
// with m the forward's mask of those g_out elements, drawn again from `seed` (1 when not training).
void lag_dropout_backward(const at::Tensor& g_out, int64_t lag, const at::Tensor& rate,
                          int64_t seed, bool training, at::Tensor g_fwd, at::Tensor g_bwd) {
  const Rows g(g_out, "g_out");
  check_contiguous_float(g_fwd, "g_fwd");
  check_contiguous_float(g_bwd, "g_bwd");
  const int64_t K = g.K, B = g.B, T_rec = g.T, H = g.n / 2;
  TORCH_CHECK(g.n == 2 * H, "g_out: expected an even last dim (2H)");
  TORCH_CHECK(g_fwd.dim() == 4 && g_fwd.size(0) == K && g_fwd.size(1) == B &&
                  g_fwd.size(2) <= T_rec && g_fwd.size(3) == H && g_bwd.sizes() == g_fwd.sizes(),
              "g_fwd, g_bwd: expected (K, B, T_enc, H) with T_enc <= T_rec");
  const WorkerKeep wk = lag_keep(rate, K, lag);
  const int64_t T = g_fwd.size(2);
  float* gf = g_fwd.data_ptr<float>();
  float* gb = g_bwd.data_ptr<float>();
  const uint64_t base = seed_base(seed);
  for_rows(K, B, T, H, g.sb < g.st, [&](int64_t k, int64_t b, int64_t s) {
    const int64_t r = (k * B + b) * T + s, row0 = (k * B + b) * T_rec;  // out's row (k, b, 0)
    const bool has_f = s + lag < T, has_b = s >= lag;  // out rows s + lag, s - lag
    const int64_t tf = has_f ? s + lag : 0, tb = has_b ? s - lag : 0;
    lag_half(has_f ? g.at(k, b, tf) : nullptr, gf + r * H, H, training, base,
             (row0 + tf) * 2 * H, wk, k);
    lag_half(has_b ? g.at(k, b, tb) + H : nullptr, gb + r * H, H, training, base,
             (row0 + tb) * 2 * H + H, wk, k);
  });
}

void register_elementwise(pybind11::module_& m) {
  m.def("uniform_fill", &uniform_fill, "uniform [0, 1) numbers from a seed, in place");
  m.def("dropout_mask", &dropout_mask, "inverted-dropout mask (K, ...), per-worker rate, in place");
  m.def("lag_dropout_forward", &lag_dropout_forward,
        "lagged encoder states times a dropout mask (the controller input), in place");
  m.def("lag_dropout_backward", &lag_dropout_backward, "its chain rule, the mask drawn again");
  m.def("cd_masks", &cd_masks, "coordinated-dropout input and gradient mask, one pass");
  m.def("poisson_nll", &poisson_nll, "Poisson NLL sums and counts per worker, optional gradient",
        pybind11::arg("log_rate"), pybind11::arg("y"), pybind11::arg("lgy"),
        pybind11::arg("loss_mask"), pybind11::arg("grad_mask") = pybind11::none(),
        pybind11::arg("grad_out") = pybind11::none(), pybind11::arg("grad_scale") = pybind11::none(),
        pybind11::arg("max_log") = 20.0);
}
