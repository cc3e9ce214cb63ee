// Whole recurrent loops of LFADS in C++, for float32 CPU tensors: the clipped-GRU sequence of the
// encoders and the controller-generator recurrence, forward and backward.
//
// The recurrences are those of autolfads/model/gru.py and controller.py (see their docstrings),
// which stay the reference; autolfads/accel/gru.py and loop.py wrap these loops as autograd nodes:
//     [r, u] = sigmoid(x_ru + h W_g);  c = tanh(x_c + (r * h) W_c);  h' = clip(c + u (h - c))
// Rows (trials, or trial x sample) never interact inside a recurrence, so the work is split into
// items = (worker k, block of rows), and each item runs all T steps on its own: one thread per item,
// no synchronisation per step, and the block's state stays in cache. Matmuls go to the BLAS that
// torch ships (sgemm_); inside a parallel region it runs on the calling thread only.
//
// Buffers are the Python tapes' ((K, T, B, n): worker-major, then time-major; filled in place);
// inputs and incoming gradients are batch-major (K, B, T, n) and may be strided views (unit stride
// in the last dim).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "arith.h"
#include "tensors.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

using autolfads::check_contiguous_float;
using autolfads::Rows;
using autolfads::fast_exp;
using autolfads::sigmoid;
using autolfads::tanh_;

namespace {

// ---------------------------------------------------------------------------------------------
// Arithmetic.


// Row-major C (m x n, row stride ldc) = beta C + A (m x k, lda) B (k x n, ldb).
void mm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
        float beta, float* c, int64_t ldc) {
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(ldc);
  const float one = 1.0f;
  sgemm_("N", "N", &M, &N, &K, &one, b, &LDA, a, &LDB, &beta, c, &LDC);  // column-major C^T = B^T A^T
}

// acc (I x J, row-major, contiguous) += a^T b, a (R x I, row stride lda), b (R x J, row stride
// ldb): one step's share of a weight gradient, sum over rows of a_i^T b_i, taken while the step's
// rows are in cache (backpropagation through time accumulates weight gradients step by step).
void add_outer(int64_t R, int64_t I, int64_t J, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* acc) {
  const int M = static_cast<int>(J), N = static_cast<int>(I), K = static_cast<int>(R);
  const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(J);
  const float one = 1.0f;
  sgemm_("N", "T", &M, &N, &K, &one, b, &LDA, a, &LDB, &one, acc, &LDC);  // acc^T += b^T a
}

// ---------------------------------------------------------------------------------------------
// Tensor access.

// A tape buffer (K, T, B, n), contiguous: row (t, k, b) -> pointer.
struct Tape {
  float* data;
  int64_t K, T, B, n;
  Tape(const at::Tensor& t, const char* name) {
    check_contiguous_float(t, name);
    TORCH_CHECK(t.dim() == 4, name, ": expected (K, T, B, n)");
    data = t.data_ptr<float>();
    K = t.size(0), T = t.size(1), B = t.size(2), n = t.size(3);
  }
  float* at(int64_t t, int64_t k, int64_t b) const { return data + ((k * T + t) * B + b) * n; }
};

// Per-worker weights (K, rows, cols), contiguous: worker k's matrix and its row stride.
struct Weights {
  const float* data;
  int64_t rows, cols;
  Weights(const at::Tensor& t, const char* name) {
    check_contiguous_float(t, name);
    data = t.data_ptr<float>();
    rows = t.size(1), cols = t.size(2);
  }
  const float* of(int64_t k) const { return data + k * rows * cols; }
};

// Per-worker matrices (K, r, c) transposed to contiguous (K, c, r): the backward multiplies by
// W^T, and small sgemm calls run a few per cent faster (median 7 %, bench/small_gemm.py) on a
// contiguous W^T than with a transpose flag.
at::Tensor transposed(const at::Tensor& w) { return w.transpose(1, 2).contiguous(); }

// The work items: (worker, block of rows), enough blocks to keep every thread busy, each at most
// `max_rows` rows so that a block's state stays in cache.
struct Items {
  int64_t workers, per_worker, block, rows;
  Items(int64_t workers_, int64_t rows_, int64_t max_rows = 128) : workers(workers_), rows(rows_) {
    const int64_t threads = at::get_num_threads();
    per_worker = std::max((threads + workers - 1) / workers, (rows + max_rows - 1) / max_rows);
    per_worker = std::max<int64_t>(1, std::min(per_worker, rows));
    block = (rows + per_worker - 1) / per_worker;
    per_worker = (rows + block - 1) / block;  // no empty blocks (e.g. 10 rows over 8 threads)
  }
  int64_t count() const { return workers * per_worker; }
  int64_t worker(int64_t i) const { return i / per_worker; }
  int64_t first(int64_t i) const { return (i % per_worker) * block; }
  int64_t size(int64_t i) const { return std::min(block, rows - first(i)); }
};

// Per-row-block partial sums of a weight gradient (I x J): (K, P, I, J) zeros, P = the row blocks
// per worker; the item of worker k whose rows start at b0 adds into its own block, so that items
// never share one, and the caller sums over P.
struct Partials {
  at::Tensor sums;
  float* data;
  int64_t per_worker, block, size;
  Partials(const Items& items, int64_t rows, int64_t cols, const at::TensorOptions& options)
      : sums(at::zeros({items.workers, items.per_worker, rows, cols}, options)),
        data(sums.data_ptr<float>()),
        per_worker(items.per_worker),
        block(items.block),
        size(rows * cols) {}
  float* of(int64_t k, int64_t b0) const { return data + (k * per_worker + b0 / block) * size; }
};

// Flushes subnormal floats to zero on this thread while in scope. Saturated gates (sigmoid near
// 1e-38) times states make subnormals, and BLAS on subnormals runs several times slower.
struct FlushSubnormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushSubnormals() { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushSubnormals() { _mm_setcsr(saved); }
#endif
};

// Runs body(worker, first row, rows) for every item, items spread over the threads.
template <typename F>
void for_items(const Items& items, F&& body) {
  at::parallel_for(0, items.count(), 1, [&](int64_t begin, int64_t end) {
    const FlushSubnormals flush;
    for (int64_t i = begin; i < end; ++i) body(items.worker(i), items.first(i), items.size(i));
  });
}

// z = x * y elementwise over n floats.
inline void multiply(int64_t n, const float* __restrict__ x, const float* __restrict__ y,
                     float* __restrict__ z) {
  for (int64_t j = 0; j < n; ++j) z[j] = x[j] * y[j];
}

// y += a x over n floats (restrict parameters: GCC vectorises it).
inline void axpy(int64_t n, float a, const float* __restrict__ x, float* __restrict__ y) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// ---------------------------------------------------------------------------------------------
// One clipped-GRU step on R rows.

struct Gru {
  const float* w_gate;  // (H, 2H); transposed, (2H, H), in a backward
  const float* w_cand;  // (H, H); transposed in a backward
  int64_t H;
  float clip;
};

// Rows of x (3H each, row stride ldx) and h (R x H) -> ru (R x 2H), rh, cand, out (R x H).
void gru_forward_rows(const Gru& g, int64_t R, const float* x, int64_t ldx, const float* h,
                      float* ru, float* rh, float* cand, float* out) {
  const int64_t H = g.H;
  mm(R, 2 * H, H, h, H, g.w_gate, 2 * H, 0.0f, ru, 2 * H);
  for (int64_t i = 0; i < R; ++i) {
    const float* xi = x + i * ldx;
    const float* hi = h + i * H;
    float* a = ru + i * 2 * H;
    float* o = rh + i * H;
    for (int64_t j = 0; j < 2 * H; ++j) a[j] = sigmoid(a[j] + xi[j]);
    for (int64_t j = 0; j < H; ++j) o[j] = a[j] * hi[j];
  }
  mm(R, H, H, rh, H, g.w_cand, H, 0.0f, cand, H);
  const float clip = g.clip;
  for (int64_t i = 0; i < R; ++i) {
    const float* xi = x + i * ldx + 2 * H;
    const float* hi = h + i * H;
    const float* u = ru + i * 2 * H + H;
    float* c = cand + i * H;
    float* s = out + i * H;
    for (int64_t j = 0; j < H; ++j) {
      const float cv = tanh_(c[j] + xi[j]);
      c[j] = cv;
      const float pre = cv + u[j] * (hi[j] - cv);
      s[j] = pre < -clip ? -clip : (pre > clip ? clip : pre);
    }
  }
}

// The gate part of one row's chain rule: d/d(candidate pre-act.) gxc, d/d(update pre-act.) gxu
// and the direct part of d/dh, gh, from d/dh' (gin; zero where the state was clipped). Restrict
// parameters, so that GCC vectorises it (it does not for restrict locals inside a loop).
inline void gate_gradients(int64_t H, float clip, const float* __restrict__ gin,
                           const float* __restrict__ h, const float* __restrict__ u,
                           const float* __restrict__ c, const float* __restrict__ state,
                           float* __restrict__ gxc, float* __restrict__ gxu,
                           float* __restrict__ gh) {
  for (int64_t j = 0; j < H; ++j) {
    const float gm = std::fabs(state[j]) < clip ? gin[j] : 0.0f;
    gxc[j] = gm * (1.0f - u[j]) * (1.0f - c[j] * c[j]);
    gxu[j] = gm * (h[j] - c[j]) * u[j] * (1.0f - u[j]);
    gh[j] = gm * u[j];
  }
}

// The reset part: d/d(reset pre-act.) gxr from d/d(r * h) grh, and its share of d/dh.
inline void reset_gradients(int64_t H, const float* __restrict__ grh, const float* __restrict__ h,
                            const float* __restrict__ r, float* __restrict__ gxr,
                            float* __restrict__ gh) {
  for (int64_t j = 0; j < H; ++j) {
    gxr[j] = grh[j] * h[j] * r[j] * (1.0f - r[j]);
    gh[j] += grh[j] * r[j];
  }
}

// Chain rule of one step on R rows (g holds the transposed weights): gin = d/dh' (R x H) -> gx =
// d/d(projected input) (row stride ldgx, 3H wide) and gh = d/dh (R x H); grh is R x H scratch. The
// state was clipped where |h'| = clip (there the gradient is zero, as hardtanh's).
void gru_backward_rows(const Gru& g, int64_t R, const float* gin, const float* h, const float* ru,
                       const float* cand, const float* state, float* gx, int64_t ldgx, float* gh,
                       float* grh) {
  const int64_t H = g.H;
  for (int64_t i = 0; i < R; ++i) {
    float* gxi = gx + i * ldgx;
    gate_gradients(H, g.clip, gin + i * H, h + i * H, ru + i * 2 * H + H, cand + i * H,
                   state + i * H, gxi + 2 * H, gxi + H, gh + i * H);
  }
  mm(R, H, H, gx + 2 * H, ldgx, g.w_cand, H, 0.0f, grh, H);  // d/d(r * h)
  for (int64_t i = 0; i < R; ++i)
    reset_gradients(H, grh + i * H, h + i * H, ru + i * 2 * H, gx + i * ldgx, gh + i * H);
  mm(R, H, 2 * H, gx, ldgx, g.w_gate, H, 1.0f, gh, H);
}

// The tape of one GRU: states (K, T + 1, B, H) and per-step gate values (K, slots, B, .) where
// slots is T (kept for a backward) or 1 (inference: one reused slot). A forward-running cell keeps
// h0 at slot 0 and the state after step t at slot t + 1; a reverse-running cell (the backward
// direction of an encoder, run from t = T - 1 down to 0) keeps h0 at slot T and the state after
// step t at slot t, so that both are in time order. Gate values of step t are at slot t.
// The reset-gated states r * h are one reused slot, (K, 1, B, H), rows (k, b) of one item: the
// backward recomputes them from cache-warm rows (`reset_gated`) instead of reading a tape.
struct GruTape {
  Tape states, ru, rh, cand;
  bool keep;
  GruTape(const at::Tensor& s, const at::Tensor& a, const at::Tensor& b, const at::Tensor& c)
      : states(s, "states"), ru(a, "ru"), rh(b, "rh"), cand(c, "cand"), keep(a.size(1) > 1) {
    TORCH_CHECK(rh.T == 1, "rh: expected one slot, (K, 1, B, H)");
  }
  int64_t slot(int64_t t) const { return keep ? t : 0; }
  void forward(const Gru& g, int64_t t, int64_t k, int64_t b, int64_t R, const float* x,
               int64_t ldx, bool reverse = false) const {
    const int64_t s = slot(t), from = reverse ? t + 1 : t, to = reverse ? t : t + 1;
    gru_forward_rows(g, R, x, ldx, states.at(from, k, b), ru.at(s, k, b), rh.at(0, k, b),
                     cand.at(s, k, b), states.at(to, k, b));
  }
  // out (R x H) = r * h of step t (the candidate's input; for W_cand's gradient).
  void reset_gated(int64_t t, int64_t k, int64_t b, int64_t R, float* out,
                   bool reverse = false) const {
    const int64_t H = states.n;
    const float* h = states.at(reverse ? t + 1 : t, k, b);
    const float* r = ru.at(t, k, b);
    for (int64_t i = 0; i < R; ++i) multiply(H, r + i * 2 * H, h + i * H, out + i * H);
  }
  void backward(const Gru& g, int64_t t, int64_t k, int64_t b, int64_t R, const float* gin,
                float* gx, int64_t ldgx, float* gh, float* grh, bool reverse = false) const {
    const int64_t from = reverse ? t + 1 : t, to = reverse ? t : t + 1;
    gru_backward_rows(g, R, gin, states.at(from, k, b), ru.at(t, k, b), cand.at(t, k, b),
                      states.at(to, k, b), gx, ldgx, gh, grh);
  }
};

Gru gru_of(const Weights& w_gate, const Weights& w_cand, int64_t k, double clip) {
  return Gru{w_gate.of(k), w_cand.of(k), w_cand.rows, static_cast<float>(clip)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Encoders: GRUs over sequences whose inputs are known in advance.
// Bidirectional: cells 2w and 2w + 1 are worker w's forward and backward directions, and the odd
// cells run in reverse over their (unflipped) inputs, tapes in time order (see GruTape).

namespace {

// Direction of cell c, and its worker's index into the incoming gradients.
struct Cell {
  int64_t worker;
  bool reverse;
  Cell(int64_t c, bool bidirectional)
      : worker(bidirectional ? c / 2 : c), reverse(bidirectional && c % 2) {}
  int64_t time(int64_t step, int64_t T) const { return reverse ? T - 1 - step : step; }
};

// The encoders' inputs when the loop projects them itself: xs (K, T B, n), time-major and
// contiguous, or (K / 2, T B, n) when bidirectional (both cells of a worker read its rows), with
// input weights w_in (K, n, 3H). With an empty w_in nothing is projected (n = 0).
struct StepInputs {
  bool project;
  const float* data = nullptr;
  int64_t T, B, n = 0;
  StepInputs(const at::Tensor& xs, const at::Tensor& w_in, int64_t K, int64_t T_, int64_t B_,
             int64_t H, bool bidirectional)
      : project(w_in.numel() > 0), T(T_), B(B_) {
    if (!project) return;
    check_contiguous_float(xs, "xs");
    TORCH_CHECK(xs.dim() == 3 && xs.size(0) == (bidirectional ? K / 2 : K) && xs.size(1) == T * B,
                "xs: expected (K, T B, n), or (K / 2, T B, n) when bidirectional");
    TORCH_CHECK(w_in.dim() == 3 && w_in.size(0) == K && w_in.size(1) == xs.size(2) &&
                    w_in.size(2) == 3 * H,
                "w_in: expected (K, n, 3H)");
    data = xs.data_ptr<float>(), n = xs.size(2);
  }
  // Worker w's rows b0, b0 + 1, ... of step t (row stride n).
  const float* rows(int64_t w, int64_t t, int64_t b0) const {
    return data + ((w * T + t) * B + b0) * n;
  }
};

}  // namespace

// Without w_in (empty), xs (K, B, T, 3H) are the projected inputs. With w_in (K, n, 3H), xs are
// the inputs themselves, time-major and contiguous, (K, T B, n), or (K / 2, T B, n) when
// bidirectional (both cells of a worker read its rows), projected step by step inside the loop
// into a cache-warm block (x_t W_in, the bias a row of W_in against a column of ones): no
// (K, T, B, 3H) projection is written to memory and read back.
void gru_sequence_forward(const at::Tensor& xs, const at::Tensor& w_in, const at::Tensor& w_gate,
                          const at::Tensor& w_cand, double clip, const at::Tensor& states,
                          const at::Tensor& ru, const at::Tensor& rh, const at::Tensor& cand,
                          bool bidirectional) {
  const Weights wg(w_gate, "w_gate"), wc(w_cand, "w_cand");
  const GruTape tape(states, ru, rh, cand);
  const int64_t K = tape.states.K, B = tape.states.B, T = tape.states.T - 1, H = tape.states.n;
  const StepInputs in(xs, w_in, K, T, B, H, bidirectional);
  const bool project = in.project;
  const Rows x(project ? states : xs, "xs");  // (states: a stand-in, never read)
  const Weights wi(project ? w_in : w_gate, "w_in");
  for_items(Items(K, B), [&](int64_t k, int64_t b0, int64_t R) {
    const Gru g = gru_of(wg, wc, k, clip);
    const Cell cell(k, bidirectional);
    std::vector<float> block(project ? R * 3 * H : 0);
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = cell.time(s, T);
      if (project) {
        mm(R, 3 * H, in.n, in.rows(cell.worker, t, b0), in.n, wi.of(k), 3 * H, 0.0f,
           block.data(), 3 * H);
        tape.forward(g, t, k, b0, R, block.data(), 3 * H, cell.reverse);
      } else {
        tape.forward(g, t, k, b0, R, x.at(k, b0, t), x.sb, cell.reverse);
      }
    }
  });
}

// The chain rule of `gru_sequence_forward`, with the weight gradients accumulated step by step
// inside the loop. The incoming gradients are in time order: of the forward cells' states in
// g_fwd ((K, B, T, H), or (K / 2, B, T, H) when bidirectional) and of the reverse cells' in g_bwd
// (K / 2, B, T, H; unused when unidirectional). With a time dim of 1 instead of T they are of each
// cell's final state only (after its last step: t = T - 1, or t = 0 for a reverse cell).
// xs and w_in are the forward's: with w_in, the inputs' own gradient (if g_inputs is not empty)
// is written per cell into g_inputs (K, T B, n) (time-major, as xs; the caller sums a worker's
// two cells), and W_in's gradient is accumulated. g_xs (K, T, B, 3H), unless empty, gets
// d/d(projected inputs). Returns [d/dh0 (K, B, H), then partial sums (K, P, rows, cols) over the P
// row blocks of each worker (the caller sums over P) of the gradients of w_gate, w_cand and, with
// w_in, of w_in].
std::vector<at::Tensor> gru_sequence_backward(
    const at::Tensor& g_fwd, const at::Tensor& g_bwd, const at::Tensor& xs, const at::Tensor& w_in,
    const at::Tensor& w_gate, const at::Tensor& w_cand, double clip, const at::Tensor& states,
    const at::Tensor& ru, const at::Tensor& rh, const at::Tensor& cand, const at::Tensor& g_xs,
    const at::Tensor& g_inputs, bool bidirectional) {
  const Rows gs_fwd(g_fwd, "g_fwd"), gs_bwd(bidirectional ? g_bwd : g_fwd, "g_bwd");
  const at::Tensor w_gate_t = transposed(w_gate), w_cand_t = transposed(w_cand);
  const Weights wg(w_gate_t, "w_gate"), wc(w_cand_t, "w_cand");
  const GruTape tape(states, ru, rh, cand);
  const int64_t K = tape.states.K, B = tape.states.B, H = tape.states.n;
  const int64_t T = tape.states.T - 1;
  const StepInputs in(xs, w_in, K, T, B, H, bidirectional);
  const bool project = in.project, keep_g_xs = g_xs.numel() > 0;
  const bool input_grads = project && g_inputs.numel() > 0;
  const int64_t n_in = in.n;
  const Tape gx(keep_g_xs ? g_xs : states, "g_xs");
  const bool final_only = g_fwd.size(2) == 1 && T > 1;
  TORCH_CHECK(final_only || g_fwd.size(2) == T, "g_fwd: expected T or 1 steps");
  TORCH_CHECK(!bidirectional || g_bwd.size(2) == g_fwd.size(2), "g_bwd: expected g_fwd's steps");
  if (input_grads) {
    check_contiguous_float(g_inputs, "g_inputs");
    TORCH_CHECK(g_inputs.dim() == 3 && g_inputs.size(0) == K && g_inputs.size(1) == T * B &&
                    g_inputs.size(2) == n_in,
                "g_inputs: expected (K, T B, n)");
  }
  const at::Tensor w_in_t = input_grads ? transposed(w_in) : w_in;
  const Weights wi_t(input_grads ? w_in_t : w_gate, "w_in");
  float* g_in = input_grads ? g_inputs.data_ptr<float>() : nullptr;
  at::Tensor carry_out = at::empty({K, B, H}, states.options());
  const Tape carry_rows(carry_out.unsqueeze(1), "carry");
  const Items items(K, B);
  const Partials g_gate(items, H, 2 * H, states.options()), g_cand(items, H, H, states.options());
  const Partials g_w_in(items, project ? n_in : 0, 3 * H, states.options());
  for_items(items, [&](int64_t k, int64_t b0, int64_t R) {
    const Gru g = gru_of(wg, wc, k, clip);
    const Cell cell(k, bidirectional);
    const Rows& gs = cell.reverse ? gs_bwd : gs_fwd;
    std::vector<float> gin(R * H), gh(R * H, 0.0f), grh(R * H), rh(R * H),
        block(keep_g_xs ? 0 : R * 3 * H);
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = cell.time(s, T), from = cell.reverse ? t + 1 : t;
      if (final_only && s < T - 1) {
        std::copy(gh.begin(), gh.end(), gin.begin());  // no gradient from outside after the last step
      } else {
        for (int64_t i = 0; i < R; ++i) {
          const float* src = gs.at(cell.worker, b0 + i, final_only ? 0 : t);
          for (int64_t j = 0; j < H; ++j) gin[i * H + j] = src[j] + gh[i * H + j];
        }
      }
      float* gxt = keep_g_xs ? gx.at(t, k, b0) : block.data();
      tape.backward(g, t, k, b0, R, gin.data(), gxt, 3 * H, gh.data(), grh.data(), cell.reverse);
      add_outer(R, H, 2 * H, tape.states.at(from, k, b0), H, gxt, 3 * H, g_gate.of(k, b0));
      tape.reset_gated(t, k, b0, R, rh.data(), cell.reverse);
      add_outer(R, H, H, rh.data(), H, gxt + 2 * H, 3 * H, g_cand.of(k, b0));
      if (project) {
        add_outer(R, n_in, 3 * H, in.rows(cell.worker, t, b0), n_in, gxt, 3 * H, g_w_in.of(k, b0));
        if (input_grads)  // written per cell k, in the inputs' (time-major) layout
          mm(R, n_in, 3 * H, gxt, 3 * H, wi_t.of(k), n_in, 0.0f,
             g_in + ((k * T + t) * B + b0) * n_in, n_in);
      }
    }
    std::memcpy(carry_rows.at(0, k, b0), gh.data(), sizeof(float) * R * H);
  });
  return {carry_out, g_gate.sums, g_cand.sums, g_w_in.sums};
}

// ---------------------------------------------------------------------------------------------
// The controller-generator recurrence (model/controller.py, accel/loop.py):
//     con_in_t = x^con_t + d_{t-1} W_fb;  c_t = GRU_con(con_in_t, c_{t-1});  raw_t = c_t W_co + b_co
//     u_t = mean_t + eps_t exp(clamp(logvar_t) / 2);  gen_in_t = x^gen_t + u_t W_ug
//     g_t = GRU_gen(gen_in_t, g_{t-1});  d_t = g_t m_{t+1}

namespace {

constexpr float kLogvarBound = 20.0f;

struct LoopWeights {
  Weights fb, con_gate, con_cand, co_w, co_b, co_to_gen, gen_gate, gen_cand;
  LoopWeights(const std::vector<at::Tensor>& w)
      : fb(w.at(0), "feedback"),
        con_gate(w.at(1), "con_gate"),
        con_cand(w.at(2), "con_cand"),
        co_w(w.at(3), "co_weight"),
        co_b(w.at(4).unsqueeze(1), "co_bias"),
        co_to_gen(w.at(5), "co_to_gen"),
        gen_gate(w.at(6), "gen_gate"),
        gen_cand(w.at(7), "gen_cand") {}
};

// The weights with every matrix transposed (the bias as it is), for the backward.
std::vector<at::Tensor> transposed_weights(const std::vector<at::Tensor>& w) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : w) out.push_back(t.dim() == 3 ? transposed(t) : t);
  return out;
}

struct LoopTapes {
  GruTape con, gen;
  Tape raw, us;
  LoopTapes(const std::vector<at::Tensor>& con_t, const std::vector<at::Tensor>& gen_t,
            const at::Tensor& raw_, const at::Tensor& us_)
      : con(con_t.at(0), con_t.at(1), con_t.at(2), con_t.at(3)),
        gen(gen_t.at(0), gen_t.at(1), gen_t.at(2), gen_t.at(3)),
        raw(raw_, "raw"),
        us(us_, "us") {}
};

// The controller's input weights when the loop projects its input itself: con_w (K, n, 3C) and
// con_b (K, 3C) for con_x (K, B, T, n), or both empty when con_x is already projected (n = 3C).
struct ConInput {
  bool project;
  int64_t n, C;
  const float* w = nullptr;
  const float* b = nullptr;
  ConInput(const at::Tensor& con_w, const at::Tensor& con_b, int64_t n_, int64_t C_)
      : project(con_w.numel() > 0), n(n_), C(C_) {
    if (!project) {
      TORCH_CHECK(n == 3 * C, "con_x: expected (K, B, T, 3C) without con_w");
      return;
    }
    check_contiguous_float(con_w, "con_w");
    check_contiguous_float(con_b, "con_b");
    TORCH_CHECK(con_w.dim() == 3 && con_w.size(1) == n && con_w.size(2) == 3 * C &&
                    con_b.dim() == 2 && con_b.size(1) == 3 * C,
                "con_w, con_b: expected (K, n, 3C) and (K, 3C) for con_x (K, B, T, n)");
    w = con_w.data_ptr<float>(), b = con_b.data_ptr<float>();
  }
  const float* weight(int64_t k) const { return w + k * n * 3 * C; }
  const float* bias(int64_t k) const { return b + k * 3 * C; }
};

// Adds one step's share of the generator-input sums for R rows: acc (U + 1 rows of n) += [u_i, 1]^T
// g_i, with u (R x U) the inferred inputs and g (R x n, row stride n) d/d(gen_in): rows 0..U-1
// sum to the gradient of W_ug, row U to that of an input the same on every row and step (the bias).
// The step's rows are summed into `step` ((U + 1) n scratch) first: two short sums round less than
// one long one.
inline void add_input_sums(int64_t R, int64_t U, int64_t n, const float* u, const float* g,
                           float* step, float* acc) {
  std::fill(step, step + (U + 1) * n, 0.0f);
  for (int64_t i = 0; i < R; ++i) {
    const float* gi = g + i * n;
    for (int64_t j = 0; j < U; ++j) axpy(n, u[i * U + j], gi, step + j * n);
    axpy(n, 1.0f, gi, step + U * n);
  }
  axpy((U + 1) * n, 1.0f, step, acc);
}

}  // namespace

// Runs the recurrence forward, filling the tapes. con_x (K, B/samples, T, 3C), the projected
// controller inputs (trial b's S samples are rows b S ... b S + S - 1 everywhere else), or with
// con_w (K, n, 3C) and con_b (K, 3C) the controller's input itself, (K, B, T, n), projected step
// by step inside the loop (x_t con_w + con_b; samples = 1; empty con_w: already projected).
// gen_x (K, B, T, 3G). masks (K, B, T + 1, G) and
// noise (K, B, T, U) may be empty (no dropout; the posterior means). std_buf (K, slots, B, U) gets
// exp(logvar / 2) when there is noise; dropped (K, T + 1, B, G), with dropped[:, 0] = g_init m_0
// already written, gets the dropped-out states d_t = g_t m_{t+1} at slot t + 1 (fed back to the
// controller, and the factors' input); without masks it is not used (the states themselves are).
void controlled_forward(const at::Tensor& con_x, const at::Tensor& con_w, const at::Tensor& con_b,
                        int64_t samples, const at::Tensor& gen_x, const at::Tensor& masks,
                        const at::Tensor& noise, double clip,
                        const std::vector<at::Tensor>& weights,
                        const std::vector<at::Tensor>& con_tape,
                        const std::vector<at::Tensor>& gen_tape, const at::Tensor& raw,
                        const at::Tensor& us, const at::Tensor& std_buf,
                        const at::Tensor& dropped) {
  const LoopWeights w(weights);
  const LoopTapes tp(con_tape, gen_tape, raw, us);
  const Rows cx(con_x, "con_x"), gx(gen_x, "gen_x");
  const ConInput cin(con_w, con_b, cx.n, tp.con.states.n);
  TORCH_CHECK(!cin.project || samples == 1, "con_w: projects one row per trial (samples = 1)");
  const bool has_masks = masks.numel() > 0, has_noise = noise.numel() > 0;
  TORCH_CHECK(!has_masks || dropped.numel() > 0, "dropped: needed with masks");
  const Rows mk(has_masks ? masks : gen_x, "masks"), nz(has_noise ? noise : gen_x, "noise");
  const Tape sd(has_noise ? std_buf : raw, "std_buf");
  const Tape dr(has_masks ? dropped : gen_tape.at(0), "dropped");
  const int64_t K = tp.gen.states.K, B = tp.gen.states.B, T = tp.raw.T;
  const int64_t C = tp.con.states.n, G = tp.gen.states.n, U = tp.us.n;
  for_items(Items(K, B), [&](int64_t k, int64_t b0, int64_t R) {
    const Gru con = gru_of(w.con_gate, w.con_cand, k, clip);
    const Gru gen = gru_of(w.gen_gate, w.gen_cand, k, clip);
    const float *fb = w.fb.of(k), *co_w = w.co_w.of(k), *co_b = w.co_b.of(k);
    const float* co_to_gen = w.co_to_gen.of(k);
    std::vector<float> con_in(R * 3 * C), gen_in(R * 3 * G);
    for (int64_t t = 0; t < T; ++t) {
      if (cin.project) {  // x_t W + b
        for (int64_t i = 0; i < R; ++i)
          std::memcpy(&con_in[i * 3 * C], cin.bias(k), sizeof(float) * 3 * C);
        mm(R, 3 * C, cin.n, cx.at(k, b0, t), cx.sb, cin.weight(k), 3 * C, 1.0f, con_in.data(),
           3 * C);
      } else {
        for (int64_t i = 0; i < R; ++i)
          std::memcpy(&con_in[i * 3 * C], cx.at(k, (b0 + i) / samples, t), sizeof(float) * 3 * C);
      }
      mm(R, 3 * C, G, dr.at(t, k, b0), G, fb, 3 * C, 1.0f, con_in.data(), 3 * C);
      tp.con.forward(con, t, k, b0, R, con_in.data(), 3 * C);
      float* rw = tp.raw.at(t, k, b0);
      for (int64_t i = 0; i < R; ++i) std::memcpy(rw + i * 2 * U, co_b, sizeof(float) * 2 * U);
      mm(R, 2 * U, C, tp.con.states.at(t + 1, k, b0), C, co_w, 2 * U, 1.0f, rw, 2 * U);
      float* u = tp.us.at(t, k, b0);
      for (int64_t i = 0; i < R; ++i) {
        const float* ri = rw + i * 2 * U;
        float* ui = u + i * U;
        if (!has_noise) {
          for (int64_t j = 0; j < U; ++j) ui[j] = ri[j];
          continue;
        }
        const float* eps = nz.at(k, b0 + i, t);
        float* si = sd.at(tp.gen.slot(t), k, b0 + i);
        for (int64_t j = 0; j < U; ++j) {
          const float lv = std::min(std::max(ri[U + j], -kLogvarBound), kLogvarBound);
          si[j] = std::exp(0.5f * lv);
          ui[j] = ri[j] + eps[j] * si[j];
        }
      }
      for (int64_t i = 0; i < R; ++i) {
        float* gi = &gen_in[i * 3 * G];
        std::memcpy(gi, gx.at(k, b0 + i, t), sizeof(float) * 3 * G);
        for (int64_t j = 0; j < U; ++j) {
          const float uj = u[i * U + j];
          const float* wj = co_to_gen + j * 3 * G;
          for (int64_t l = 0; l < 3 * G; ++l) gi[l] += uj * wj[l];
        }
      }
      tp.gen.forward(gen, t, k, b0, R, gen_in.data(), 3 * G);
      if (has_masks) {
        const float* g = tp.gen.states.at(t + 1, k, b0);
        float* d = dr.at(t + 1, k, b0);
        for (int64_t i = 0; i < R; ++i) {
          const float* m = mk.at(k, b0 + i, t + 1);
          for (int64_t j = 0; j < G; ++j) d[i * G + j] = g[i * G + j] * m[j];
        }
      }
    }
  });
}

// The chain rule backward over the tapes of `controlled_forward` (samples = 1), with every weight
// gradient accumulated step by step inside the loop. Incoming gradients, each possibly empty
// (none): g_gen (K, B, T, G) of the states, g_dropped (K, B, T, G) of the dropped-out states d_t
// (of the states themselves without masks), g_con (K, B, T, C), g_raw (K, B, T, 2U), g_u
// (K, B, T, U). dropped (K, T + 1, B, G) is the fed-back tape of the forward (the states tape
// without masks). con_x, con_w, con_b are the forward's (con_x unused and may be empty without
// con_w). Writes, unless empty: g_gen_x (K, T, B, 3G), g_con_x (K, T, B, 3C; needed without
// con_w) and, with con_w, g_con_in (K, T, B, n) the gradient of the controller's input itself.
// Returns [d/dg_init (through the recurrence, before m_0), d/dc_0, then the weight gradients as
// partial sums (K, P, rows, cols) over the P row blocks of each worker (the caller sums over P),
// in the order of the weights: feedback, con_gate, con_cand, co_weight, co_bias (rows 1), then
// [u_t, 1]^T d/d(gen_in_t) (U + 1 rows: W_ug's gradient, and in row U that of a generator input
// the same on every row and step, the bias), gen_gate, gen_cand, then con_w and con_b (1 row;
// both 0 rows without con_w)].
std::vector<at::Tensor> controlled_backward(
    const at::Tensor& g_gen, const at::Tensor& g_dropped, const at::Tensor& g_con,
    const at::Tensor& g_raw, const at::Tensor& g_u, const at::Tensor& masks, const at::Tensor& noise, double clip,
    const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& con_tape,
    const std::vector<at::Tensor>& gen_tape, const at::Tensor& raw, const at::Tensor& us,
    const at::Tensor& std_buf, const at::Tensor& dropped, const at::Tensor& con_x,
    const at::Tensor& con_w, const at::Tensor& con_b, const at::Tensor& g_gen_x,
    const at::Tensor& g_con_x, const at::Tensor& g_con_in) {
  const std::vector<at::Tensor> weights_t = transposed_weights(weights);
  const LoopWeights w(weights_t);  // every matrix transposed
  const LoopTapes tp(con_tape, gen_tape, raw, us);
  const bool has_masks = masks.numel() > 0, has_noise = noise.numel() > 0;
  const bool has_g_gen = g_gen.numel() > 0, has_g_dropped = g_dropped.numel() > 0;
  const bool has_g_con = g_con.numel() > 0, has_g_raw = g_raw.numel() > 0;
  const bool has_g_u = g_u.numel() > 0, keep_g_gen_x = g_gen_x.numel() > 0;
  const bool keep_g_con_x = g_con_x.numel() > 0, has_g_con_in = g_con_in.numel() > 0;
  const at::Tensor& any4d = con_tape.at(0);  // stands in for absent tensors (never read)
  const Rows gg(has_g_gen ? g_gen : any4d, "g_gen"), gd(has_g_dropped ? g_dropped : any4d, "g_dropped");
  const Rows gc(has_g_con ? g_con : any4d, "g_con"), graw(has_g_raw ? g_raw : any4d, "g_raw");
  const Rows gu(has_g_u ? g_u : any4d, "g_u");
  const Rows mk(has_masks ? masks : any4d, "masks"), nz(has_noise ? noise : any4d, "noise");
  const Tape sd(has_noise ? std_buf : raw, "std_buf");
  const Tape dr(dropped, "dropped");
  const Tape ggx(keep_g_gen_x ? g_gen_x : any4d, "g_gen_x");
  const Tape gcx(keep_g_con_x ? g_con_x : any4d, "g_con_x");
  const int64_t K = tp.gen.states.K, B = tp.gen.states.B, T = tp.raw.T;
  const int64_t C = tp.con.states.n, G = tp.gen.states.n, U = tp.us.n;
  const ConInput cin(con_w, con_b, con_w.numel() > 0 ? con_w.size(1) : 3 * C, C);
  const Rows cx(cin.project ? con_x : any4d, "con_x");
  TORCH_CHECK(!cin.project || (cx.B == B && cx.n == cin.n), "con_x: expected (K, B, T, n)");
  TORCH_CHECK(cin.project || keep_g_con_x, "g_con_x: needed without con_w");
  const at::Tensor con_w_t = has_g_con_in ? transposed(con_w) : con_w;
  const Tape gci(has_g_con_in ? g_con_in : any4d, "g_con_in");
  at::Tensor carry_g_out = at::empty({K, B, G}, raw.options());
  at::Tensor carry_c_out = at::empty({K, B, C}, raw.options());
  const Items items(K, B);
  const Partials g_fb(items, G, 3 * C, raw.options()), g_con_gate(items, C, 2 * C, raw.options()),
      g_con_cand(items, C, C, raw.options()), g_co_w(items, C, 2 * U, raw.options()),
      g_co_b(items, 1, 2 * U, raw.options()), g_gen_in(items, U + 1, 3 * G, raw.options()),
      g_gen_gate(items, G, 2 * G, raw.options()), g_gen_cand(items, G, G, raw.options()),
      g_con_w(items, cin.project ? cin.n : 0, 3 * C, raw.options()),
      g_con_b(items, cin.project ? 1 : 0, 3 * C, raw.options());
  const Tape carry_g_rows(carry_g_out.unsqueeze(1), "carry_g"),
      carry_c_rows(carry_c_out.unsqueeze(1), "carry_c");
  for_items(items, [&](int64_t k, int64_t b0, int64_t R) {
    const Gru con = gru_of(w.con_gate, w.con_cand, k, clip);
    const Gru gen = gru_of(w.gen_gate, w.gen_cand, k, clip);
    const float *fb = w.fb.of(k), *co_w = w.co_w.of(k), *co_to_gen = w.co_to_gen.of(k);
    std::vector<float> carry_g(R * G, 0.0f), carry_c(R * C, 0.0f), gin_g(R * G), gh_g(R * G),
        grh_g(R * G), gin_c(R * C), grh_c(R * C), grad_d(R * G), step_sums((U + 1) * 3 * G),
        gr(R * 2 * U), gxg_block(keep_g_gen_x ? 0 : R * 3 * G), rh_g(R * G), rh_c(R * C),
        gxc_block(keep_g_con_x ? 0 : R * 3 * C);
    for (int64_t t = T - 1; t >= 0; --t) {
      // d/dg_t = g_gen + g_dropped m_{t+1} + carry
      std::copy(carry_g.begin(), carry_g.end(), gin_g.begin());
      for (int64_t i = 0; i < R; ++i) {
        float* __restrict__ gi = &gin_g[i * G];
        if (has_g_gen) {
          const float* __restrict__ src = gg.at(k, b0 + i, t);
          for (int64_t j = 0; j < G; ++j) gi[j] += src[j];
        }
        if (has_g_dropped) {
          const float* __restrict__ src = gd.at(k, b0 + i, t);
          if (has_masks) {
            const float* __restrict__ m = mk.at(k, b0 + i, t + 1);
            for (int64_t j = 0; j < G; ++j) gi[j] += src[j] * m[j];
          } else {
            for (int64_t j = 0; j < G; ++j) gi[j] += src[j];
          }
        }
      }
      float* gxg = keep_g_gen_x ? ggx.at(t, k, b0) : gxg_block.data();
      tp.gen.backward(gen, t, k, b0, R, gin_g.data(), gxg, 3 * G, gh_g.data(), grh_g.data());
      add_input_sums(R, U, 3 * G, tp.us.at(t, k, b0), gxg, step_sums.data(), g_gen_in.of(k, b0));
      add_outer(R, G, 2 * G, tp.gen.states.at(t, k, b0), G, gxg, 3 * G, g_gen_gate.of(k, b0));
      tp.gen.reset_gated(t, k, b0, R, rh_g.data());
      add_outer(R, G, G, rh_g.data(), G, gxg + 2 * G, 3 * G, g_gen_cand.of(k, b0));
      // d/du = g_u + d/d(gen_in) W_ug^T; d/dlogvar = d/du * eps * std / 2 inside the clamp.
      std::fill(gr.begin(), gr.end(), 0.0f);
      if (has_g_u)
        for (int64_t i = 0; i < R; ++i)
          std::memcpy(&gr[i * 2 * U], gu.at(k, b0 + i, t), sizeof(float) * U);
      mm(R, U, 3 * G, gxg, 3 * G, co_to_gen, U, 1.0f, gr.data(), 2 * U);
      float* co_b_sum = g_co_b.of(k, b0);
      for (int64_t i = 0; i < R; ++i) {
        float* gri = &gr[i * 2 * U];
        if (has_noise) {
          const float* eps = nz.at(k, b0 + i, t);
          const float* si = sd.at(t, k, b0 + i);
          const float* ri = tp.raw.at(t, k, b0 + i);
          for (int64_t j = 0; j < U; ++j) {
            const float lv = ri[U + j];
            const bool inside = lv >= -kLogvarBound && lv <= kLogvarBound;
            gri[U + j] = inside ? gri[j] * (0.5f * eps[j] * si[j]) : 0.0f;
          }
        }
        if (has_g_raw) {
          const float* gi = graw.at(k, b0 + i, t);
          for (int64_t j = 0; j < 2 * U; ++j) gri[j] += gi[j];
        }
        axpy(2 * U, 1.0f, gri, co_b_sum);
      }
      add_outer(R, C, 2 * U, tp.con.states.at(t + 1, k, b0), C, gr.data(), 2 * U, g_co_w.of(k, b0));
      // d/dc = g_con + d/draw W_co^T + carry
      std::copy(carry_c.begin(), carry_c.end(), gin_c.begin());
      if (has_g_con)
        for (int64_t i = 0; i < R; ++i) {
          const float* src = gc.at(k, b0 + i, t);
          for (int64_t j = 0; j < C; ++j) gin_c[i * C + j] += src[j];
        }
      mm(R, C, 2 * U, gr.data(), 2 * U, co_w, C, 1.0f, gin_c.data(), C);
      float* gxc = keep_g_con_x ? gcx.at(t, k, b0) : gxc_block.data();
      tp.con.backward(con, t, k, b0, R, gin_c.data(), gxc, 3 * C, carry_c.data(), grh_c.data());
      if (cin.project) {  // the input projection x_t W + b: its weights' and input's gradients
        add_outer(R, cin.n, 3 * C, cx.at(k, b0, t), cx.sb, gxc, 3 * C, g_con_w.of(k, b0));
        float* bias_sum = g_con_b.of(k, b0);
        for (int64_t i = 0; i < R; ++i) axpy(3 * C, 1.0f, gxc + i * 3 * C, bias_sum);
        if (has_g_con_in)
          mm(R, cin.n, 3 * C, gxc, 3 * C, con_w_t.data_ptr<float>() + k * 3 * C * cin.n, cin.n,
             0.0f, gci.at(t, k, b0), cin.n);
      }
      add_outer(R, C, 2 * C, tp.con.states.at(t, k, b0), C, gxc, 3 * C, g_con_gate.of(k, b0));
      tp.con.reset_gated(t, k, b0, R, rh_c.data());
      add_outer(R, C, C, rh_c.data(), C, gxc + 2 * C, 3 * C, g_con_cand.of(k, b0));
      add_outer(R, G, 3 * C, dr.at(t, k, b0), G, gxc, 3 * C, g_fb.of(k, b0));
      // d/d(dropped[t]) = d/d(con_in) W_fb^T, through the mask onto g_{t-1}
      mm(R, G, 3 * C, gxc, 3 * C, fb, G, 0.0f, grad_d.data(), G);
      for (int64_t i = 0; i < R; ++i) {
        const float* __restrict__ d = &grad_d[i * G];
        const float* __restrict__ gh = &gh_g[i * G];
        float* __restrict__ carry = &carry_g[i * G];
        if (has_masks) {
          const float* __restrict__ m = mk.at(k, b0 + i, t);
          for (int64_t j = 0; j < G; ++j) carry[j] = gh[j] + d[j] * m[j];
        } else {
          for (int64_t j = 0; j < G; ++j) carry[j] = gh[j] + d[j];
        }
      }
    }
    std::memcpy(carry_g_rows.at(0, k, b0), carry_g.data(), sizeof(float) * R * G);
    std::memcpy(carry_c_rows.at(0, k, b0), carry_c.data(), sizeof(float) * R * C);
  });
  return {carry_g_out,     carry_c_out,    g_fb.sums,       g_con_gate.sums,
          g_con_cand.sums, g_co_w.sums,    g_co_b.sums,     g_gen_in.sums,
          g_gen_gate.sums, g_gen_cand.sums, g_con_w.sums,   g_con_b.sums};
}

// Defined in elementwise.cpp and optim.cpp (the same extension).
void register_elementwise(pybind11::module_& m);
void register_optim(pybind11::module_& m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_elementwise(m);
  register_optim(m);
  m.def("gru_sequence_forward", &gru_sequence_forward,
        "clipped-GRU sequences (inputs projected in the loop with w_in), tapes in place");
  m.def("gru_sequence_backward", &gru_sequence_backward,
        "its chain rule; returns d/dh0 and the weight gradients' partial sums");
  m.def("controlled_forward", &controlled_forward, "controller-generator loop, tapes in place");
  m.def("controlled_backward", &controlled_backward, "its chain rule; returns the carries");
}
