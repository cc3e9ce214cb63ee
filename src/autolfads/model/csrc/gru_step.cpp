// One clipped-GRU step, forward and backward, for float32 CPU tensors (K workers, B rows, H units).
//
// The same recurrence as autolfads/model/gru_kernels.py (see its docstring):
//     [r, u] = sigmoid(x_ru + h W_g);  c = tanh(x_c + (r * h) W_c);  h' = clip(c + u (h - c))
// Each call does the step's two matmuls with ATen and the gate arithmetic in two fused passes over
// the rows, instead of about ten ATen calls from Python. Built on first use by
// autolfads/model/fused.py; the PyTorch path in gru_kernels.py stays the reference.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

// exp(x) to ~2 ulp (Cephes expf polynomial); written so that compilers vectorise loops of it.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  return p * scale;
}
inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }
inline float tanh_(float x) { return 2.0f / (1.0f + fast_exp(-2.0f * x)) - 1.0f; }

// Rows are (k, b) pairs; x may be a strided view (K, B, 3H) with unit stride in its last dim.
struct Rows {
  int64_t batch, stride_k, stride_b;
  int64_t offset(int64_t i) const { return (i / batch) * stride_k + (i % batch) * stride_b; }
};

Rows rows_of(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "expected (K, B, n) with unit last stride");
  return Rows{x.size(1), x.stride(0), x.stride(1)};
}

int64_t grain(int64_t width) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1)); }

void check_f32_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), name,
              ": expected a contiguous float32 CPU tensor");
}

}  // namespace

// Writes ru = [r, u] (K, B, 2H), rh = r * h, cand = c and state = h' (K, B, H) in place.
void gru_step_forward(const at::Tensor& x, const at::Tensor& h, const at::Tensor& w_gate,
                      const at::Tensor& w_cand, double clip_d, at::Tensor ru, at::Tensor rh,
                      at::Tensor cand, at::Tensor state) {
  check_f32_contiguous(h, "h");
  check_f32_contiguous(ru, "ru");
  check_f32_contiguous(rh, "rh");
  check_f32_contiguous(cand, "cand");
  check_f32_contiguous(state, "state");
  const int64_t n = h.size(0) * h.size(1), H = h.size(2);
  const float clip = static_cast<float>(clip_d);
  const Rows xr = rows_of(x);
  const float* X = x.data_ptr<float>();
  const float* Hp = h.data_ptr<float>();
  float* RU = ru.data_ptr<float>();
  float* RH = rh.data_ptr<float>();
  float* C = cand.data_ptr<float>();
  float* S = state.data_ptr<float>();

  at::bmm_out(ru, h, w_gate);
  at::parallel_for(0, n, grain(3 * H), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* xi = X + xr.offset(i);
      const float* hi = Hp + i * H;
      float* a = RU + i * 2 * H;
      float* o = RH + i * H;
      for (int64_t j = 0; j < 2 * H; ++j) a[j] = sigmoid(a[j] + xi[j]);
      for (int64_t j = 0; j < H; ++j) o[j] = a[j] * hi[j];
    }
  });
  at::bmm_out(cand, rh, w_cand);
  at::parallel_for(0, n, grain(4 * H), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* xi = X + xr.offset(i) + 2 * H;
      const float* hi = Hp + i * H;
      const float* u = RU + i * 2 * H + H;
      float* c = C + i * H;
      float* s = S + i * H;
      for (int64_t j = 0; j < H; ++j) {
        const float cv = tanh_(c[j] + xi[j]);
        c[j] = cv;
        const float pre = cv + u[j] * (hi[j] - cv);
        s[j] = pre < -clip ? -clip : (pre > clip ? clip : pre);
      }
    }
  });
}

// Writes d/d(projected input) into g_x (K, B, 3H) and returns d/dh (K, B, H), from g = d/dh'.
// The state was clipped where |h'| = clip (there the gradient is zero, as hardtanh's).
at::Tensor gru_step_backward(const at::Tensor& g_in, const at::Tensor& h, const at::Tensor& ru,
                             const at::Tensor& cand, const at::Tensor& state,
                             const at::Tensor& w_gate_t, const at::Tensor& w_cand_t, double clip_d,
                             at::Tensor g_x) {
  const at::Tensor g = g_in.contiguous();
  check_f32_contiguous(g, "g");
  check_f32_contiguous(h, "h");
  check_f32_contiguous(ru, "ru");
  check_f32_contiguous(cand, "cand");
  check_f32_contiguous(state, "state");
  check_f32_contiguous(g_x, "g_x");
  const int64_t n = h.size(0) * h.size(1), H = h.size(2);
  const float clip = static_cast<float>(clip_d);
  at::Tensor g_h = at::empty_like(h);
  const float* G = g.data_ptr<float>();
  const float* Hp = h.data_ptr<float>();
  const float* RU = ru.data_ptr<float>();
  const float* C = cand.data_ptr<float>();
  const float* S = state.data_ptr<float>();
  float* GX = g_x.data_ptr<float>();
  float* GH = g_h.data_ptr<float>();

  at::parallel_for(0, n, grain(5 * H), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* gi = G + i * H;
      const float* hi = Hp + i * H;
      const float* u = RU + i * 2 * H + H;
      const float* c = C + i * H;
      const float* s = S + i * H;
      float* gx = GX + i * 3 * H;
      float* gh = GH + i * H;
      for (int64_t j = 0; j < H; ++j) {
        const float gm = (s[j] > -clip && s[j] < clip) ? gi[j] : 0.0f;
        gx[2 * H + j] = gm * (1.0f - u[j]) * (1.0f - c[j] * c[j]);
        gx[H + j] = gm * (hi[j] - c[j]) * u[j] * (1.0f - u[j]);
        gh[j] = gm * u[j];
      }
    }
  });
  const at::Tensor g_ru = g_x.narrow(2, 0, 2 * H);
  const at::Tensor g_rh = at::bmm(g_x.narrow(2, 2 * H, H), w_cand_t);
  const float* GRH = g_rh.data_ptr<float>();
  at::parallel_for(0, n, grain(4 * H), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* grh = GRH + i * H;
      const float* hi = Hp + i * H;
      const float* r = RU + i * 2 * H;
      float* gx = GX + i * 3 * H;
      float* gh = GH + i * H;
      for (int64_t j = 0; j < H; ++j) {
        gx[j] = grh[j] * hi[j] * r[j] * (1.0f - r[j]);
        gh[j] += grh[j] * r[j];
      }
    }
  });
  g_h.baddbmm_(g_ru, w_gate_t);
  return g_h;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gru_step_forward", &gru_step_forward, "clipped-GRU step, in place (float32, CPU)");
  m.def("gru_step_backward", &gru_step_backward, "its chain rule; returns d/dh");
}
