/* The collapsed one-factor Gaussian LMM's log density and gradient, compiled at install time.
 *
 * lmmbayes/engines/collapsed/kernel.py documents the model, the parameter order and the
 * packed buffer this code reads; it loads this file's shared object with ctypes
 * and hands nutpie the addresses of lmm_logp and lmm_expand, which have the
 * signatures nutpie calls for models it compiles itself. Everything here is
 * reentrant (no globals, scratch space on the stack), because nutpie calls it
 * from one thread per chain. No -ffast-math: a seed must give the same draws on
 * every run.
 *
 * Arrays are row-major: WtW[i][j] = WtW[i * p + j], ZtZ[g][i][k] = ZtZ[(g * q + i) * q + k],
 * ZtW[g][i][j] = ZtW[(g * q + i) * p + j], Lam[i][j] = Lam[i * q + j].
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 8 /* total length, n_dim, n_beta, q, levels, correlation coordinates, N, y'y */

/* The build is -O2 (setup.py). The Gaussian routes' small fixed-size blocks (level_term, the 4 x 4 products) are
 * -O3 under GCC, which unrolls them: the maximal 2 x 2 design's gradient 87 -> 66 us. Not the whole file: -O3
 * made the GLMM kernel 8% and InstEval's gather loop 13% slower. */
/* The bernoulli passes (bound by their exp) are also built for x86-64-v3 (AVX2, FMA), picked at load time through
 * glibc's ifunc; elsewhere they are built once, for the baseline. Measured: the nested benchmark's gradient 3.61 ->
 * 3.33 ms, bern_N10000_G1000's 6.86 -> 6.64 ms. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 11 && defined(__GLIBC__)
#define WIDE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define WIDE_CLONES
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define SMALL_BLOCKS __attribute__((optimize("O3")))
#define GATHER_LOOP __attribute__((optimize("O2")))
#else
#define SMALL_BLOCKS
#define GATHER_LOOP
#endif
static const double LOG_2PI = 1.8378770664093453;

static double log_sigmoid(double z) { return z > -30.0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }

static double sigmoid(double z) {
    if (z >= 0.0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

#if defined(__GNUC__) /* GCC and clang: vectors of 2 doubles (SSE2 on x86-64, NEON on arm64) */
#define HAVE_V2D 1
typedef double v2d_t __attribute__((vector_size(16)));
typedef long long v2l_t __attribute__((vector_size(16)));

static inline v2d_t select2(v2l_t mask, v2d_t a, v2d_t b) { /* mask ? a : b, lane by lane */
    return (v2d_t)(((v2l_t)a & mask) | ((v2l_t)b & ~mask));
}

/* exp(x) for x <= 0, two lanes at once, to about 2 ulp: libm's exp is a call per number, which the bernoulli
 * passes spend most of their time in. x is clamped at -708 (exp is then 3e-308, and the logit terms read only
 * 1 + e, p = e / (1 + e) ~ 0 and d1 = y - p), n = round(x / ln 2) by the 1.5 * 2^52 shifter, r = x - n ln 2 in two
 * parts (Cody and Waite; n ln2_hi is exact), exp(r) by its Taylor series to r^12 (|r| <= ln 2 / 2: the next term
 * is 2e-16 of it), and 2^n from n's bits. */
static inline v2d_t exp_core2(v2d_t x);
static inline v2d_t exp_nonpositive2(v2d_t x) {
    const v2d_t lo = {-708.0, -708.0};
    return exp_core2(select2(x < lo, lo, x));
}

/* exp of two lanes of any sign, x clamped to [-708, 709] (2^n stays a normal double; past 709 libm's exp would
 * overflow to inf, and e^709 = 8e307 is as good a stand-in wherever it meets finite numbers). */
static inline v2d_t exp_clamped2(v2d_t x) {
    const v2d_t lo = {-708.0, -708.0}, hi = {709.0, 709.0};
    return exp_core2(select2(x > hi, hi, select2(x < lo, lo, x)));
}

/* Cody-Waite reduction x = n ln 2 + r, |r| <= ln 2 / 2, Taylor to r^12, 2^n from the bits: x in [-708, 709]. */
static inline v2d_t exp_core2(v2d_t x) {
    const v2d_t shifter = {0x1.8p52, 0x1.8p52};
    const v2d_t t = x * 1.4426950408889634 + shifter, n = t - shifter;
    const v2d_t r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    /* Estrin's scheme: a dependency chain of 6 products instead of Horner's 12, so that pairs of lanes overlap */
    const v2d_t r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const v2d_t a = (1.0 + r) + (0.5 + r * (1.0 / 6.0)) * r2, b = (1.0 / 24.0 + r * (1.0 / 120.0))
        + (1.0 / 720.0 + r * (1.0 / 5040.0)) * r2;
    const v2d_t c = (1.0 / 40320.0 + r * (1.0 / 362880.0)) + (1.0 / 3628800.0 + r * (1.0 / 39916800.0)) * r2;
    const v2d_t p = (a + b * r4) + (c + r4 * (1.0 / 479001600.0)) * r8;
    const v2l_t k = (v2l_t)t - (v2l_t)shifter; /* n as an integer: the shifter leaves it in the low bits */
    return (v2d_t)((k + 1023) << 52) * p;
}
#endif

/* exp_clamped2 over x[0 .. n - 1] (exp_nonpositive2 where x <= 0), for the tests; libm's exp where there are
 * no vectors. */
void vector_exp(const double *x, double *out, int64_t n) {
    int64_t i = 0;
#ifdef HAVE_V2D
    for (v2d_t v; i + 1 < n; i += 2) {
        memcpy(&v, x + i, sizeof v);
        v = exp_clamped2(v);
        memcpy(out + i, &v, sizeof v);
    }
#endif
    for (; i < n; i++) out[i] = exp(x[i]);
}

/* For each of K values v_j, over n bernoulli rows of unit weight with eta_ij = base_i + tb_i v_j: the row's
 * log-likelihood sum_i [y_i eta_ij - log(1 + e^eta_ij)] as f[j] - log(prod[j]) (f[j] added to, prod[j] set), and
 * each row's dl/deta = y_i - p_ij into d1[i K + j]. log(1 + e^eta) = max(eta, 0) + log(1 + e^-|eta|), the second
 * term kept as a product (each factor lies in [1, 2]; past 512 rows, one log per block of them goes into f), so
 * that the caller can divide by it instead of taking K logs (logit_unit_weights). Where the compiler has vectors,
 * two rows at a time, all K values per pair of rows: K independent chains of arithmetic, which the processor
 * overlaps (one value at a time over a class's few rows left it waiting on each division). */
WIDE_CLONES static void logit_unit_nodes(int n, const double *y, const double *base, const double *tb, int K,
                                         const double *v, double *f, double *prod, double *d1) {
    int i = 0;
    for (int j = 0; j < K; j++) prod[j] = 1.0;
#ifdef HAVE_V2D
    v2d_t sum[K], pr[K], b, t, yy;
    const v2d_t zero = {0.0, 0.0}, one = {1.0, 1.0};
    const v2l_t sign = {(long long)0x8000000000000000ULL, (long long)0x8000000000000000ULL};
    for (int j = 0; j < K; j++) { sum[j] = zero; pr[j] = one; }
    for (; i + 1 < n; i += 2) {
        memcpy(&b, base + i, sizeof b); memcpy(&t, tb + i, sizeof t); memcpy(&yy, y + i, sizeof yy);
        for (int j = 0; j < K; j++) {
            const v2d_t eta = b + t * v[j], e = exp_nonpositive2((v2d_t)((v2l_t)eta | sign)), ope = one + e;
            const v2d_t inv = one / ope;
            const v2l_t pos = eta >= zero;
            const v2d_t d = yy - select2(pos, inv, e * inv);
            d1[(size_t)i * K + j] = d[0]; d1[(size_t)(i + 1) * K + j] = d[1];
            sum[j] += yy * eta - select2(pos, eta, zero);
            pr[j] *= ope;
        }
        if ((i & 511) == 510) /* 256 pairs: each lane's product is below 2^256 */
            for (int j = 0; j < K; j++) { f[j] -= log(pr[j][0] * pr[j][1]); pr[j] = one; }
    }
    for (int j = 0; j < K; j++) { f[j] += sum[j][0] + sum[j][1]; prod[j] = pr[j][0] * pr[j][1]; }
#endif
    for (; i < n; i++)
        for (int j = 0; j < K; j++) {
            const double eta = base[i] + tb[i] * v[j], e = exp(-fabs(eta)), inv = 1.0 / (1.0 + e);
            d1[(size_t)i * K + j] = y[i] - (eta >= 0.0 ? inv : e * inv);
            f[j] += y[i] * eta - fmax(eta, 0.0);
            prod[j] *= 1.0 + e;
        }
}

/* log sum_j exp(f_j) / prod_j (logit_unit_nodes' split form), with f := the normalised weights. The exps by
 * exp_nonpositive2 (f_j - max f <= 0) and one log: per inner level and outer node this replaces K + 1 libm logs
 * and K exps, which cost as much as the passes over a class's few rows. NAN where no f_j is finite. */
static double logit_unit_weights(double *f, const double *prod, int K) {
    double top = -INFINITY, sum = 0.0;
    for (int j = 0; j < K; j++) if (f[j] > top) top = f[j];
    if (!isfinite(top)) return NAN;
    int j = 0;
#ifdef HAVE_V2D
    for (v2d_t a, p; j + 1 < K; j += 2) {
        memcpy(&a, f + j, sizeof a); memcpy(&p, prod + j, sizeof p);
        a = exp_nonpositive2(a - top) / p;
        memcpy(f + j, &a, sizeof a);
        sum += a[0] + a[1];
    }
#endif
    for (; j < K; j++) { f[j] = exp(f[j] - top) / prod[j]; sum += f[j]; }
    const double inv = 1.0 / sum;
    for (j = 0; j < K; j++) f[j] *= inv;
    return top + log(sum);
}

/* Unnormalised log density of prior family `fam` (Distribution.kernel) at x, and its derivative. */
static void family_lp(int fam, const double *a, double x, double *lp, double *d) {
    double t, nu, mu, s, lx;
    switch (fam) {
    case 1: /* normal(mu, sigma) */
        t = (x - a[0]) / a[1];
        *lp = -0.5 * t * t; *d = -t / a[1]; return;
    case 2: case 3: /* student_t(nu, mu, sigma); cauchy(mu, sigma) is nu = 1 */
        if (fam == 2) { nu = a[0]; mu = a[1]; s = a[2]; } else { nu = 1.0; mu = a[0]; s = a[1]; }
        t = x - mu;
        *lp = -0.5 * (nu + 1.0) * log1p(t * t / (nu * s * s));
        *d = -(nu + 1.0) * t / (nu * s * s + t * t); return;
    case 4: /* double_exponential(mu, sigma) */
        t = x - a[0];
        *lp = -fabs(t) / a[1]; *d = t != 0.0 ? -copysign(1.0, t) / a[1] : 0.0; return;
    case 5: /* logistic(mu, s) */
        t = (x - a[0]) / a[1];
        *lp = t > -30.0 ? -t - 2.0 * log1p(exp(-t)) : t; *d = -tanh(0.5 * t) / a[1]; return;
    case 6: /* exponential(rate) */
        *lp = -a[0] * x; *d = -a[0]; return;
    case 7: /* gamma(shape, rate) */
        *lp = (a[0] - 1.0) * log(x) - a[1] * x; *d = (a[0] - 1.0) / x - a[1]; return;
    case 8: /* inv_gamma(shape, scale) */
        *lp = -(a[0] + 1.0) * log(x) - a[1] / x; *d = -(a[0] + 1.0) / x + a[1] / (x * x); return;
    case 9: /* lognormal(mu, sigma) */
        lx = log(x); t = (lx - a[0]) / a[1];
        *lp = -lx - 0.5 * t * t; *d = (-1.0 - t / a[1]) / x; return;
    case 10: /* weibull(shape k, scale lam) */
        t = pow(x / a[1], a[0]);
        *lp = (a[0] - 1.0) * log(x) - t; *d = ((a[0] - 1.0) - a[0] * t) / x; return;
    case 11: /* beta(alpha, beta) on (0, 1) */
        *lp = (a[0] - 1.0) * log(x) + (a[1] - 1.0) * log1p(-x);
        *d = (a[0] - 1.0) / x - (a[1] - 1.0) / (1.0 - x); return;
    default: /* 0 flat, 12 uniform: constant on the support */
        *lp = 0.0; *d = 0.0; return;
    }
}

/* x, dx/dz, log|dx/dz| and its derivative for the transform onto [lo, hi]. */
static void constrain(double lo, double hi, double z, double *x, double *dx, double *lj, double *dlj) {
    int low = isfinite(lo), high = isfinite(hi);
    if (!low && !high) { *x = z; *dx = 1.0; *lj = 0.0; *dlj = 0.0; return; }
    if (!high) { double e = exp(z); *x = lo + e; *dx = e; *lj = z; *dlj = 1.0; return; }
    if (!low) { double e = exp(z); *x = hi - e; *dx = -e; *lj = z; *dlj = 1.0; return; }
    double s = sigmoid(z), w = hi - lo;
    *x = lo + w * s; *dx = w * s * (1.0 - s);
    *lj = log(w) + log_sigmoid(z) + log_sigmoid(-z); *dlj = 1.0 - 2.0 * s;
}

/* Lower Cholesky factor of the q x q matrix A in place (upper part untouched); 0 if not PD. */
static inline __attribute__((always_inline)) int cholesky_inplace(double *A, int q) {
    for (int j = 0; j < q; j++) {
        double s = A[j * q + j];
        for (int k = 0; k < j; k++) s -= A[j * q + k] * A[j * q + k];
        if (!(s > 0.0)) return 0;
        const double d = sqrt(s), inv = 1.0 / d; /* one division per column: they dominate small blocks */
        A[j * q + j] = d;
        for (int i = j + 1; i < q; i++) {
            double t = A[i * q + j];
            for (int k = 0; k < j; k++) t -= A[i * q + k] * A[j * q + k];
            A[i * q + j] = t * inv;
        }
    }
    return 1;
}

/* One level's term of marginal_loglik: its log determinant and quadratic form go into *logdet and *quad, its
 * gradient into g_beta, g_lam, *g_s2 and (crossed designs) g_r_g. Always inlined, and called with q a constant
 * for blocks of 2 to 4 terms, so that -O3 (SMALL_BLOCKS) unrolls the q x q loops and the scratch arrays have fixed
 * sizes. Divisions are by reciprocals computed once (1/s2, and 1/L_ii per level): in these small blocks they cost
 * more than the products. Both together: the maximal 2 x 2 design's gradient from 95 to 79 us. 0 where A_g is
 * not positive definite. */
static inline __attribute__((always_inline)) int level_term(
        const int q, int p, const double *beta, double inv_s2, const double *Lam, const double *ZtZ_g,
        const double *ZtW_g, const double *Zty_g, const double *r_adj_g, double *g_beta, double *g_lam,
        double *g_r_g, double *logdet, double *quad, double *g_s2) {
    const double inv_s4 = inv_s2 * inv_s2;
    double r[q], c[q], v[q], m[q], ms[q], lg[q], dinv[q], M[q * q], A[q * q], Linv[q * q], P[q * q], GA[q * q];
    for (int i = 0; i < q; i++) {
        double t = Zty_g[i];
        for (int j = 0; j < p; j++) t -= ZtW_g[i * p + j] * beta[j];
        r[i] = r_adj_g ? t - r_adj_g[i] : t;
    }
    for (int j = 0; j < q; j++) { /* c = Lam'r, M = Z'Z_g Lam */
        double t = 0.0;
        for (int i = 0; i < q; i++) t += Lam[i * q + j] * r[i];
        c[j] = t;
        for (int i = 0; i < q; i++) {
            t = 0.0;
            for (int k = 0; k < q; k++) t += ZtZ_g[i * q + k] * Lam[k * q + j];
            M[i * q + j] = t;
        }
    }
    for (int i = 0; i < q; i++) /* A = I + Lam'M / s2; P keeps A - I, needed after A is factored */
        for (int j = 0; j <= i; j++) {
            double t = 0.0;
            for (int k = 0; k < q; k++) t += Lam[k * q + i] * M[k * q + j];
            A[i * q + j] = A[j * q + i] = t * inv_s2 + (i == j ? 1.0 : 0.0);
            P[i * q + j] = P[j * q + i] = t * inv_s2;
        }
    if (!cholesky_inplace(A, q)) return 0;
    double prod = 1.0; /* each L_ii >= 1 (A >= I): one log per level unless the product overflows */
    for (int i = 0; i < q; i++) {
        dinv[i] = 1.0 / A[i * q + i];
        prod *= A[i * q + i];
    }
    if (prod < 1e300) *logdet += 2.0 * log(prod);
    else for (int i = 0; i < q; i++) *logdet += 2.0 * log(A[i * q + i]);
    for (int i = 0; i < q; i++) { /* v = L^-1 c */
        double t = c[i];
        for (int k = 0; k < i; k++) t -= A[i * q + k] * v[k];
        v[i] = t * dinv[i];
        *quad += v[i] * v[i];
    }
    for (int i = q - 1; i >= 0; i--) { /* m = L'^-1 v = A^-1 c */
        double t = v[i];
        for (int k = i + 1; k < q; k++) t -= A[k * q + i] * m[k];
        m[i] = t * dinv[i];
        ms[i] = m[i] * inv_s4;
    }
    for (int j = 0; j < q; j++) /* Linv = L^-1, column by column */
        for (int i = 0; i < q; i++) {
            if (i < j) { Linv[i * q + j] = 0.0; continue; }
            double t = i == j ? 1.0 : 0.0;
            for (int k = j; k < i; k++) t -= A[i * q + k] * Linv[k * q + j];
            Linv[i * q + j] = t * dinv[i];
        }
    double trace_GA_AmI = 0.0;
    for (int i = 0; i < q; i++) /* GA = -(A^-1 + m m'/s4)/2, A^-1 = Linv' Linv */
        for (int j = 0; j < q; j++) {
            double t = 0.0;
            for (int k = (i > j ? i : j); k < q; k++) t += Linv[k * q + i] * Linv[k * q + j];
            GA[i * q + j] = -0.5 * (t + m[i] * ms[j]);
        }
    for (int i = 0; i < q; i++)
        for (int j = 0; j < q; j++) trace_GA_AmI += GA[i * q + j] * P[j * q + i];
    *g_s2 -= trace_GA_AmI * inv_s2;
    for (int i = 0; i < q; i++) { /* dl/dc = m/s4; dl/dbeta -= Z'W_g' Lam dl/dc */
        lg[i] = 0.0;
        for (int j = 0; j <= i; j++) lg[i] += Lam[i * q + j] * ms[j]; /* Lam is lower triangular */
        if (g_r_g) g_r_g[i] = lg[i];
    }
    for (int j = 0; j < p; j++) {
        double t = 0.0;
        for (int i = 0; i < q; i++) t += ZtW_g[i * p + j] * lg[i];
        g_beta[j] -= t;
    }
    for (int i = 0; i < q; i++) /* dl/dLam += 2 M GA / s2 + r (dl/dc)' */
        for (int j = 0; j < q; j++) {
            double t = 0.0;
            for (int k = 0; k < q; k++) t += M[i * q + k] * GA[k * q + j];
            g_lam[i * q + j] += 2.0 * t * inv_s2 + r[i] * ms[j];
        }
    return 1;
}

/* log p(y | beta, sigma, Lam) from the cross-products (see kernel.py for the algebra).
 * Writes dl/dbeta into g_beta, dl/dLam into g_lam and dl/dsigma into *g_sigma;
 * returns -inf where some A_g is not positive definite (overflow only).
 * For crossed factors (pc_log_density) the other factors' effects are known: r_adj (G x q) is then
 * subtracted from each level's Z'(y - W beta), rr_extra added to the residual sum of squares, and dl/dr
 * (r = Z'(y - W beta) - r_adj, per level) written to g_r; plain models pass NULL, 0 and NULL. */
SMALL_BLOCKS static double marginal_loglik(int p, int G, int q, const double *beta, double sigma, const double *Lam,
                              double n, const double *WtW, const double *Wty, double yty, const double *ZtZ,
                              const double *ZtW, const double *Zty, const double *r_adj, double rr_extra,
                              double *g_beta, double *g_lam, double *g_sigma, double *g_r) {
    double s2 = sigma * sigma, s4 = s2 * s2, rr = yty + rr_extra, g_s2 = 0.0, logdet = 0.0, quad = 0.0;
    for (int i = 0; i < p; i++) {
        double wb = 0.0;
        for (int j = 0; j < p; j++) wb += WtW[i * p + j] * beta[j];
        rr += beta[i] * (wb - 2.0 * Wty[i]);
        g_beta[i] = (Wty[i] - wb) / s2;
    }
    for (int i = 0; i < q * q; i++) g_lam[i] = 0.0;
    if (q == 1) { /* one term: the same algebra with scalars (a third of the time on InstEval's 2,972 students) */
        const double lam = Lam[0];
        double prod = 1.0, g_l = 0.0;
        for (int g = 0; g < G; g++) {
            const double *ZtW_g = ZtW + (size_t)g * p;
            double r = Zty[g];
            for (int j = 0; j < p; j++) r -= ZtW_g[j] * beta[j];
            if (r_adj) r -= r_adj[g];
            const double M1 = ZtZ[g] * lam, P1 = lam * M1 / s2, A = 1.0 + P1; /* A >= 1 */
            prod *= A;
            if (prod > 1e250) { logdet += log(prod); prod = 1.0; }
            const double m1 = lam * r / A, GA = -0.5 * (1.0 / A + m1 * m1 / s4), lg = lam * m1 / s4;
            quad += lam * r * m1;
            g_s2 -= GA * P1 / s2;
            if (g_r) g_r[g] = lg;
            for (int j = 0; j < p; j++) g_beta[j] -= ZtW_g[j] * lg;
            g_l += 2.0 * M1 * GA / s2 + r * m1 / s4;
        }
        if (!(prod < INFINITY)) { *g_sigma = 0.0; return -INFINITY; }
        logdet += log(prod);
        g_lam[0] = g_l;
        G = 0; /* the general loop below is done */
    }
    /* q = 1 took the scalar path above (G is 0 then); a constant q lets level_term unroll */
    const double inv_s2 = 1.0 / s2;
#define LEVELS(QC)                                                                                                \
    for (int g = 0; g < G; g++)                                                                                   \
        if (!level_term(QC, p, beta, inv_s2, Lam, ZtZ + (size_t)g * (QC) * (QC), ZtW + (size_t)g * (QC) * p,      \
                        Zty + (size_t)g * (QC), r_adj ? r_adj + (size_t)g * (QC) : NULL, g_beta, g_lam,           \
                        g_r ? g_r + (size_t)g * (QC) : NULL, &logdet, &quad, &g_s2)) {                           \
            *g_sigma = 0.0;                                                                                       \
            return -INFINITY;                                                                                     \
        }
    switch (q) {
    case 2: LEVELS(2) break;
    case 3: LEVELS(3) break;
    case 4: LEVELS(4) break;
    default: LEVELS(q)
    }
#undef LEVELS
    g_s2 += -0.5 * n / s2 + 0.5 * rr / s4 - quad / (s4 * s2);
    *g_sigma = 2.0 * sigma * g_s2;
    return -0.5 * (n * (LOG_2PI + log(s2)) + logdet + (rr - quad / s2) / s2);
}

/* The parameters' priors, read from a packed buffer: k = n_beta + n_dpar + q parameters, then the correlation
 * blocks as [number of blocks, then per block: size m, LKJ eta, the m term indices (ascending)]. A block of m
 * terms has m (m - 1) / 2 coordinates in x after the k parameters (n_cor in all). */
typedef struct {
    int n_beta, n_dpar, q, n_cor, k;
    const double *fam, *args, *lo, *hi, *pa, *pb, *alpha, *beta_, *blocks;
} Priors;

/* Point P at the per-parameter arrays starting at o; returns what follows them. */
static const double *read_priors(Priors *P, const double *o, int n_beta, int n_dpar, int q, int n_cor) {
    int k = n_beta + n_dpar + q;
    P->n_beta = n_beta; P->n_dpar = n_dpar; P->q = q; P->n_cor = n_cor; P->k = k;
    P->fam = o; o += k;
    P->args = o; o += 3 * k;
    P->lo = o; o += k;
    P->hi = o; o += k;
    P->pa = o; o += k;
    P->pb = o; o += k;
    P->alpha = o; o += k;
    P->beta_ = o; o += k;
    P->blocks = o;
    int n_blocks = (int)o[0];
    o += 1;
    for (int b = 0; b < n_blocks; b++) o += 2 + (int)o[0];
    return o;
}

/* Priors and Jacobians at x (their gradient into grad); vals: the parameters in standardised units,
 * dxdz: d vals / d x; Lam = diag(sd) Lcorr. cpc (2 n_cor) keeps each correlation coordinate's canonical
 * partial correlation and the row's sum of squares before it, for chain_back.
 * Parameter j is u_j on [lo_j, hi_j]; its prior is evaluated at a_j + b_j u_j (the user's scale) and the
 * likelihood at alpha_j + beta_j u_j (standardised units), both exact linear maps.
 * A correlation block's Cholesky factor comes from canonical partial correlations (Stan's cholesky_corr):
 * z = tanh(y / 2) per coordinate, L[i][j] = z_ij sqrt(1 - S_ij) with S_ij = sum_{l<j} L[i][l]^2, L[i][i] =
 * sqrt(1 - S_ii). Its log density is LKJ(eta) on L, sum_i (m - i - 1 + 2 eta - 2) log L[i][i] (Stan's
 * lkj_corr_cholesky), plus the Jacobians sum 0.5 log(1 - S_ij) and sum log(1 - z_ij^2) (constants dropped).
 * For two terms this is PyMC's rho = 2u - 1, u ~ Beta(eta, eta) on the log-odds scale. */
static double prior_part(const Priors *P, const double *x, double *grad, double *vals, double *dxdz,
                         double *Lcorr, double *cpc, double *Lam) {
    const int q = P->q, sd0 = P->n_beta + P->n_dpar;
    double lp = 0.0;
    for (int j = 0; j < P->k; j++) {
        double uj, dj, lj, dlj, f_lp, f_d;
        constrain(P->lo[j], P->hi[j], x[j], &uj, &dj, &lj, &dlj);
        family_lp((int)P->fam[j], P->args + 3 * j, P->pa[j] + P->pb[j] * uj, &f_lp, &f_d);
        lp += f_lp + lj;
        grad[j] = dlj + f_d * P->pb[j] * dj; /* the likelihood's part is added by chain_back */
        vals[j] = P->alpha[j] + P->beta_[j] * uj;
        dxdz[j] = P->beta_[j] * dj;
    }
    for (int i = 0; i < q * q; i++) Lcorr[i] = (i % (q + 1) == 0) ? 1.0 : 0.0;
    const double *spec = P->blocks + 1;
    int c = 0;
    for (int b = 0; b < (int)P->blocks[0]; b++) {
        const int m = (int)spec[0];
        const double eta = spec[1], *terms = spec + 2;
        for (int i = 1; i < m; i++) {
            const int ti = (int)terms[i];
            double S = 0.0;
            for (int j = 0; j < i; j++, c++) {
                double z = tanh(0.5 * x[P->k + c]), L_ij = z * sqrt(1.0 - S);
                grad[P->k + c] = 0.0; /* all of it in chain_back */
                lp += log1p(-z * z) + 0.5 * log1p(-S);
                cpc[c] = z; cpc[P->n_cor + c] = S;
                Lcorr[ti * q + (int)terms[j]] = L_ij;
                S += L_ij * L_ij;
            }
            Lcorr[ti * q + ti] = sqrt(1.0 - S);
            lp += 0.5 * (m - i - 1 + 2.0 * eta - 2.0) * log1p(-S);
        }
        spec += 2 + m;
    }
    for (int i = 0; i < q; i++)
        for (int j = 0; j < q; j++) Lam[i * q + j] = vals[sd0 + i] * Lcorr[i * q + j];
    return lp;
}

/* Add the likelihood's gradient (by beta, the dpars and Lam) to grad through the maps of prior_part, and the
 * correlation blocks' whole gradient (reverse mode through the canonical partial correlations). */
static void chain_back(const Priors *P, const double *vals, const double *dxdz, const double *Lcorr,
                       const double *cpc, const double *g_beta, const double *g_dpar, const double *g_lam,
                       double *grad) {
    const int q = P->q, nb = P->n_beta, sd0 = P->n_beta + P->n_dpar;
    for (int j = 0; j < nb; j++) grad[j] += g_beta[j] * dxdz[j];
    for (int j = 0; j < P->n_dpar; j++) grad[nb + j] += g_dpar[j] * dxdz[nb + j];
    for (int i = 0; i < q; i++) {
        double t = 0.0;
        for (int j = 0; j < q; j++) t += g_lam[i * q + j] * Lcorr[i * q + j];
        grad[sd0 + i] += t * dxdz[sd0 + i];
    }
    const double *spec = P->blocks + 1;
    int c0 = 0;
    for (int b = 0; b < (int)P->blocks[0]; b++) {
        const int m = (int)spec[0];
        const double eta = spec[1], *terms = spec + 2;
        for (int i = 1; i < m; i++) {
            const int ti = (int)terms[i];
            const double sd = vals[sd0 + ti], L_ii = Lcorr[ti * q + ti];
            const int first = c0 + i * (i - 1) / 2; /* the row's first coordinate */
            /* d/dS of the row's last S (= 1 - L_ii^2): through L_ii (likelihood and LKJ term) */
            double adj_S = -0.5 * sd * g_lam[ti * q + ti] / L_ii - 0.5 * (m - i - 1 + 2.0 * eta - 2.0) / (L_ii * L_ii);
            for (int j = i - 1; j >= 0; j--) {
                const int c = first + j;
                const double z = cpc[c], S = cpc[P->n_cor + c], r = sqrt(1.0 - S);
                const double L_ij = Lcorr[ti * q + (int)terms[j]];
                const double adj_L = sd * g_lam[ti * q + (int)terms[j]] + 2.0 * L_ij * adj_S;
                double adj_z = adj_L * r - 2.0 * z / (1.0 - z * z);
                adj_S += -0.5 * adj_L * z / r - 0.5 / (1.0 - S);
                grad[P->k + c] += adj_z * 0.5 * (1.0 - z * z); /* dz/dy = (1 - z^2) / 2 */
            }
        }
        c0 += m * (m - 1) / 2;
        spec += 2 + m;
    }
}

/* Log density (priors, Jacobians, marginal likelihood) at x; its gradient into grad. */
double lmm_log_density(const double *x, double *grad, const double *buf) {
    const int n_beta = (int)buf[2], q = (int)buf[3], G = (int)buf[4], n_cor = (int)buf[5];
    const double n = buf[6], yty = buf[7];
    Priors P;
    const double *o = read_priors(&P, buf + HEADER, n_beta, 1, q, n_cor);
    const double *shift = o; o += n_beta;
    const double *WtW = o; o += (size_t)n_beta * n_beta;
    const double *Wty = o; o += n_beta;
    const double *ZtZ = o; o += (size_t)G * q * q;
    const double *ZtW = o; o += (size_t)G * q * n_beta;
    const double *Zty = o;

    const int nb = n_beta > 0 ? n_beta : 1, nc = n_cor > 0 ? 2 * n_cor : 1; /* no zero-length arrays */
    double vals[P.k], dxdz[P.k], beta[nb], g_beta[nb], cpc[nc];
    double Lcorr[q * q], Lam[q * q], g_lam[q * q];
    double g_sigma;
    double lp = prior_part(&P, x, grad, vals, dxdz, Lcorr, cpc, Lam);
    for (int k = 0; k < n_beta; k++) beta[k] = vals[k] - shift[k];
    double ll = marginal_loglik(n_beta, G, q, beta, vals[n_beta], Lam, n, WtW, Wty, yty, ZtZ, ZtW, Zty, NULL, 0.0,
                                g_beta, g_lam, &g_sigma, NULL);
    chain_back(&P, vals, dxdz, Lcorr, cpc, g_beta, &g_sigma, g_lam, grad);
    return lp + ll;
}

/* ---------------------------------------------------------------------------------------------
 * Crossed factors (kernel.py's CrossedKernel documents the buffer): the factor with the most effects
 * integrated out as above, given the other factors' effects b_k = z_k Lam_k' (z_k ~ N(0, I), sampled).
 * Their effects enter through the residual sum of squares (rr_extra) and through each integrated level's
 * Z'r (r_adj = sum_k M_k b_k, M_k the sparse cross-products of the integrated factor with factor k);
 * the gradient goes back the same way. Sparse matrices are CSR (row pointers, columns, values), the indices
 * stored as int64 bit patterns in the float64 buffer (read as doubles, every pass would convert 10^5 of them). */
#define MAX_SAMPLED 15

typedef struct {
    int64_t n_rows;
    const int64_t *ptr, *cols; /* CSR; int64 bit patterns in the float64 buffer (kernel.py's _csr) */
    const int64_t *ids;        /* few distinct blocks (kernel.py's _bsr): entry e's is vals + ids[e] * per; else NULL */
    const double *vals;
} Csr;

typedef struct {
    int off, q, G; /* the factor's first sd among all sds, its terms, its levels */
    const double *ZtZ, *ZtW, *Zty;
} FactorSums;

static const double *read_factor(FactorSums *f, const double *o, int p) {
    f->off = (int)o[0]; f->q = (int)o[1]; f->G = (int)o[2];
    o += 3;
    f->ZtZ = o; o += (size_t)f->G * f->q * f->q;
    f->ZtW = o; o += (size_t)f->G * f->q * p;
    f->Zty = o; o += (size_t)f->G * f->q;
    return o;
}

/* A CSR matrix, or a block CSR one (kernel.py's _bsr: rows and columns are then blocks, and each stored entry is a
 * block of `per` values, row-major). A block CSR matrix with few distinct blocks (a factorial design's conditions)
 * stores each entry's block as an index into a table of them, so a pass reads a fraction of the memory. */
static const double *read_csr(Csr *t, const double *o, int per) {
    t->n_rows = (int64_t)o[0];
    const int64_t nnz = (int64_t)o[1], n_table = (int64_t)o[2];
    t->ptr = (const int64_t *)(o + 3);
    t->cols = (const int64_t *)(o + 4 + t->n_rows);
    t->ids = n_table > 0 ? (const int64_t *)(o + 4 + t->n_rows + nnz) : NULL;
    t->vals = o + 4 + t->n_rows + nnz + (n_table > 0 ? nnz : 0);
    return t->vals + (n_table > 0 ? n_table : nnz) * per;
}

/* Entry e's block of M (bs values). */
static inline const double *block_of(const Csr *M, int64_t e, int bs) {
    return M->vals + (M->ids ? M->ids[e] : e) * bs;
}

/* Row i of the CSR matrix M times v. Four partial sums: one sum's chain of dependent additions bounds the loop
 * by the adder's latency (measured: the crossed route's two products with the cross-products ran at half speed).
 * Kept at -O2 and out of line in the crossed route's -O3 code (SMALL_BLOCKS): GCC's -O3 code for this gather loop
 * is slower (InstEval's gradient 385 -> 435 us); a call per row costs nothing measurable. */
GATHER_LOOP static double csr_row_dot(const Csr *M, int64_t i, const double *v) {
    double t0 = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0;
    int64_t e = M->ptr[i];
    const int64_t end = M->ptr[i + 1];
    for (; e + 3 < end; e += 4) {
        t0 += M->vals[e] * v[M->cols[e]];
        t1 += M->vals[e + 1] * v[M->cols[e + 1]];
        t2 += M->vals[e + 2] * v[M->cols[e + 2]];
        t3 += M->vals[e + 3] * v[M->cols[e + 3]];
    }
    for (; e < end; e++) t0 += M->vals[e] * v[M->cols[e]];
    return (t0 + t1) + (t2 + t3);
}

/* Block row g of the block CSR matrix M (blocks ql x qr, one per level pair) times v, into out (ql): each block's
 * column index is read once for its ql qr values (the maximal 2 x 2 design's 4 x 4 blocks: 1 index per 16). One
 * term on both sides is plain CSR (csr_row_dot). */
static inline void bsr_row_dot(const Csr *M, int64_t g, int ql, int qr, const double *v, double *out) {
    if (ql == 1 && qr == 1) { out[0] = csr_row_dot(M, g, v); return; }
    if (ql == 4 && qr == 4) {
#if defined(__GNUC__) /* GCC and clang: vectors of 2 doubles (SSE2 on x86-64, NEON on arm64) */
        /* One sum per entry of the block, added across the row's blocks and only then within each block row, so
         * a block is 8 independent products of contiguous 2-vectors. */
        typedef double v2d __attribute__((vector_size(16)));
        v2d a[8] = {{0.0, 0.0}}, x0, x1, r;
        for (int64_t e = M->ptr[g]; e < M->ptr[g + 1]; e++) {
            const double *V = block_of(M, e, 16), *vh = v + M->cols[e] * 4;
            memcpy(&x0, vh, sizeof x0); memcpy(&x1, vh + 2, sizeof x1);
            for (int i = 0; i < 4; i++) {
                memcpy(&r, V + 4 * i, sizeof r); a[2 * i] += r * x0;
                memcpy(&r, V + 4 * i + 2, sizeof r); a[2 * i + 1] += r * x1;
            }
        }
        for (int i = 0; i < 4; i++) out[i] = (a[2 * i][0] + a[2 * i][1]) + (a[2 * i + 1][0] + a[2 * i + 1][1]);
        return;
#else
        double o0 = 0.0, o1 = 0.0, o2 = 0.0, o3 = 0.0;
        for (int64_t e = M->ptr[g]; e < M->ptr[g + 1]; e++) {
            const double *V = block_of(M, e, 16), *vh = v + M->cols[e] * 4;
            const double v0 = vh[0], v1 = vh[1], v2 = vh[2], v3 = vh[3];
            o0 += V[0] * v0 + V[1] * v1 + V[2] * v2 + V[3] * v3;
            o1 += V[4] * v0 + V[5] * v1 + V[6] * v2 + V[7] * v3;
            o2 += V[8] * v0 + V[9] * v1 + V[10] * v2 + V[11] * v3;
            o3 += V[12] * v0 + V[13] * v1 + V[14] * v2 + V[15] * v3;
        }
        out[0] = o0; out[1] = o1; out[2] = o2; out[3] = o3;
        return;
#endif
    }
    for (int i = 0; i < ql; i++) out[i] = 0.0;
    const int bs = ql * qr;
    for (int64_t e = M->ptr[g]; e < M->ptr[g + 1]; e++) {
        const double *V = block_of(M, e, bs), *vh = v + M->cols[e] * qr;
        for (int i = 0; i < ql; i++) {
            double t = 0.0;
            for (int j = 0; j < qr; j++) t += V[i * qr + j] * vh[j];
            out[i] += t;
        }
    }
}

/* The q x q diagonal block of the Q x Q matrix A starting at off, into B. */
static void sub_block(const double *A, int Q, int off, int q, double *B) {
    for (int i = 0; i < q; i++)
        for (int j = 0; j < q; j++) B[i * q + j] = A[(off + i) * Q + off + j];
}

/* v <- H v for each of the q columns of v (G x q, row major), H the Householder reflection that swaps e_1 and
 * 1/sqrt(G) (symmetric, orthogonal: unit Jacobian, and N(0, I) priors stay N(0, I)). With beta decoupled, the
 * likelihood cannot see a factor's effects all moving together (their projection on W went to beta'): only their
 * prior places that direction, far more widely than the data place each level. Rotated, it is one coordinate
 * (sqrt(G) times the effects' mean) that a diagonal mass matrix can scale on its own. */
static void householder(double *v, int G, int q) {
    if (G < 2) return;
    const double u = 1.0 / sqrt((double)G), h1 = 1.0 - u, hh = 2.0 - 2.0 * u; /* h = e_1 - u 1 */
    for (int t = 0; t < q; t++) {
        double d = h1 * v[t];
        for (int g = 1; g < G; g++) d -= u * v[(size_t)g * q + t];
        const double f = 2.0 * d / hh;
        v[t] -= f * h1;
        for (int g = 1; g < G; g++) v[(size_t)g * q + t] += f * u;
    }
}

SMALL_BLOCKS double pc_log_density(const double *x, double *grad, const double *buf) {
    const int n_beta = (int)buf[2], Q = (int)buf[3], n_cor = (int)buf[5];
    const double n = buf[6], yty = buf[7];
    Priors P;
    const double *o = read_priors(&P, buf + HEADER, n_beta, 1, Q, n_cor);
    const double *shift = o; o += n_beta;
    const double *WtW = o; o += (size_t)n_beta * n_beta;
    const double *Wty = o; o += n_beta;
    FactorSums big, oth[MAX_SAMPLED];
    Csr with_big[MAX_SAMPLED], big_with[MAX_SAMPLED], pairs[MAX_SAMPLED * (MAX_SAMPLED - 1) / 2];
    int pair_k[MAX_SAMPLED * (MAX_SAMPLED - 1) / 2], pair_l[MAX_SAMPLED * (MAX_SAMPLED - 1) / 2];
    o = read_factor(&big, o, n_beta);
    const int n_oth = (int)o[0];
    o += 1;
    for (int k = 0; k < n_oth; k++) {
        o = read_factor(&oth[k], o, n_beta);
        o = read_csr(&with_big[k], o, big.q * oth[k].q);
        o = read_csr(&big_with[k], o, big.q * oth[k].q);
    }
    const int n_pairs = (int)o[0];
    o += 1;
    for (int t = 0; t < n_pairs; t++) {
        pair_k[t] = (int)o[0]; pair_l[t] = (int)o[1];
        o = read_csr(&pairs[t], o + 2, 1);
    }
    /* How each sampled factor is parameterised (kernel.py's FactorsKernel): per term, centred or not; then whether
     * beta is decoupled from the sampled effects (off only to test against the plain coordinates) and, if so, per
     * factor its A_k = Z_k'W (W'W)^+ (levels x q x n_beta). */
    const double *cent[MAX_SAMPLED];
    int centred[MAX_SAMPLED]; /* any term centred */
    for (int k = 0; k < n_oth; k++) {
        cent[k] = o;
        centred[k] = 0;
        for (int i = 0; i < oth[k].q; i++) centred[k] |= o[i] != 0.0;
        o += oth[k].q;
    }
    const int mapped = o[0] != 0.0;
    o += 1;
    const double *proj[MAX_SAMPLED];
    for (int k = 0; mapped && k < n_oth; k++) { proj[k] = o; o += (size_t)oth[k].G * oth[k].q * n_beta; }

    const int nb = n_beta > 0 ? n_beta : 1, nc = n_cor > 0 ? 2 * n_cor : 1, qb = big.q;
    double vals[P.k], dxdz[P.k], beta[nb], g_beta[nb], cpc[nc];
    double Lcorr[Q * Q], Lam[Q * Q], g_lam[Q * Q], lam_big[qb * qb], g_lam_big[qb * qb];
    double g_sigma;
    double lp = prior_part(&P, x, grad, vals, dxdz, Lcorr, cpc, Lam);

    /* the sampled effects b_k (levels x q_k, all factors one after another) and their gradient */
    size_t n_b = 0, start[MAX_SAMPLED + 1];
    for (int k = 0; k < n_oth; k++) { start[k] = n_b; n_b += (size_t)oth[k].G * oth[k].q; }
    start[n_oth] = n_b;
    const size_t n_r = (size_t)big.G * qb;
    double *b = malloc(sizeof(double) * (4 * n_b + 2 * n_r + 1));
    if (!b) return NAN;
    double *g_b = b + n_b, *r_adj = g_b + n_b, *g_r = r_adj + n_r, *z = g_r + n_r;
    double *xe = z + n_b; /* the sampled factors' coordinates, rotated back (see householder) */
    double *g_z = grad + P.k + n_cor, log_jac = 0.0;
    for (size_t i = 0; i < n_b; i++) xe[i] = x[P.k + n_cor + i];
    for (int k = 0; mapped && k < n_oth; k++) householder(xe + start[k], oth[k].G, oth[k].q);
    /* b_g = Lam_k z_g (Lam_k lower triangular). For a non-centred term x holds z_gi; for a centred one b_gi, and
     * z_gi = (b_gi - sum_{j<i} Lam_ij z_gj) / Lam_ii (forward substitution: z = M^-1 x, M's row i Lam's if centred,
     * else e_i), with Jacobian -log Lam_ii per level. Centring suits a term whose levels the data determine well
     * (the sd then barely moves them); a fully centred factor's density is N(0, Lam_k Lam_k') per level. */
    for (int k = 0; k < n_oth; k++) {
        const FactorSums *f = &oth[k];
        const double *L = Lam + f->off * Q + f->off;
        for (size_t at = start[k]; at < start[k + 1]; at += f->q)
            for (int i = 0; i < f->q; i++) {
                double t = 0.0;
                for (int j = 0; j < i; j++) t += L[i * Q + j] * z[at + j];
                if (cent[k][i] != 0.0) {
                    z[at + i] = (xe[at + i] - t) / L[i * Q + i];
                    b[at + i] = xe[at + i];
                } else {
                    z[at + i] = xe[at + i];
                    b[at + i] = t + L[i * Q + i] * xe[at + i];
                }
            }
        for (int i = 0; i < f->q; i++)
            if (cent[k][i] != 0.0) log_jac -= f->G * log(L[i * Q + i]);
    }
    /* The sampled effects tie beta to their projection on W (on InstEval, the intercept to the lecturers' mean),
     * a direction a diagonal mass matrix cannot follow. So x holds beta' = beta + c, c = sum_k A_k' b_k that
     * least-squares projection: the likelihood sees beta' and the part of the effects W cannot absorb. The priors
     * are evaluated at beta = beta' - c (unit Jacobian); Lam does not depend on beta, so prior_part runs again at
     * the mapped point. */
    double xm[mapped ? P.k + n_cor : 1], c_proj[nb];
    if (mapped) {
        for (int j = 0; j < n_beta; j++) c_proj[j] = 0.0;
        for (int k = 0; k < n_oth; k++)
            for (size_t i = start[k]; i < start[k + 1]; i++) {
                const double *A = proj[k] + (i - start[k]) * n_beta;
                for (int j = 0; j < n_beta; j++) c_proj[j] += A[j] * b[i];
            }
        for (int j = 0; j < P.k + n_cor; j++) xm[j] = x[j];
        for (int j = 0; j < n_beta; j++) xm[j] -= c_proj[j] / P.beta_[j]; /* A's columns are 0 where beta is bounded */
        lp = prior_part(&P, xm, grad, vals, dxdz, Lcorr, cpc, Lam);
    }
    lp += log_jac;
    for (int k = 0; k < n_beta; k++) beta[k] = vals[k] - shift[k];
    const double sigma = vals[n_beta], s2 = sigma * sigma;
    double rr_extra = 0.0;
    for (size_t i = 0; i < n_r; i++) r_adj[i] = 0.0;
    for (int k = 0; k < n_oth; k++) {
        const FactorSums *f = &oth[k];
        const int q = f->q;
        for (int g = 0; g < f->G; g++) {
            const double *zg = z + start[k] + (size_t)g * q;
            const double *bg = b + start[k] + (size_t)g * q;
            double *gg = g_b + start[k] + (size_t)g * q;
            for (int i = 0; i < q; i++) { /* rr += b'Z'Z_g b - 2 b'(Z'y - Z'W beta)_g; its derivative by b */
                double res = f->Zty[(size_t)g * q + i], zb = 0.0;
                for (int j = 0; j < n_beta; j++) res -= f->ZtW[((size_t)g * q + i) * n_beta + j] * beta[j];
                for (int j = 0; j < q; j++) zb += f->ZtZ[((size_t)g * q + i) * q + j] * bg[j];
                rr_extra += bg[i] * (zb - 2.0 * res);
                gg[i] = 2.0 * (zb - res);
            }
            for (int j = 0; j < q; j++) lp -= 0.5 * zg[j] * zg[j];
        }
        const Csr *M = &with_big[k];
        const double *bk = b + start[k];
        double acc[qb];
        for (int64_t g = 0; g < M->n_rows; g++) { /* one store per row */
            bsr_row_dot(M, g, qb, f->q, bk, acc);
            for (int i = 0; i < qb; i++) r_adj[g * qb + i] += acc[i];
        }
    }
    for (int t = 0; t < n_pairs; t++) { /* rr += 2 b_k' M b_l */
        const Csr *M = &pairs[t];
        const double *bk = b + start[pair_k[t]], *bl = b + start[pair_l[t]];
        double *gk = g_b + start[pair_k[t]], *gl = g_b + start[pair_l[t]];
        for (int64_t i = 0; i < M->n_rows; i++) {
            double t_k = 0.0;
            for (int64_t e = M->ptr[i]; e < M->ptr[i + 1]; e++) {
                const int64_t j = M->cols[e];
                t_k += M->vals[e] * bl[j];
                gl[j] += 2.0 * M->vals[e] * bk[i];
            }
            rr_extra += 2.0 * bk[i] * t_k;
            gk[i] += 2.0 * t_k;
        }
    }

    sub_block(Lam, Q, big.off, qb, lam_big);
    double ll = marginal_loglik(n_beta, big.G, qb, beta, sigma, lam_big, n, WtW, Wty, yty, big.ZtZ, big.ZtW,
                                big.Zty, r_adj, rr_extra, g_beta, g_lam_big, &g_sigma, g_r);
    /* dl/db_k: through rr (dl/drr = -1/(2 s2)) and through r = ... - M_k b_k */
    for (size_t i = 0; i < n_b; i++) g_b[i] *= -0.5 / s2;
    for (int k = 0; k < n_oth; k++) { /* through M_k's transpose, row by row: gathers, not scattered updates */
        const Csr *T = &big_with[k];
        const int q = oth[k].q;
        double *gk = g_b + start[k], acc[q];
        for (int64_t h = 0; h < T->n_rows; h++) {
            bsr_row_dot(T, h, q, qb, g_r, acc);
            for (int i = 0; i < q; i++) gk[h * q + i] -= acc[i];
        }
    }
    for (int i = 0; i < Q * Q; i++) g_lam[i] = 0.0;
    for (int i = 0; i < qb; i++)
        for (int j = 0; j < qb; j++) g_lam[(big.off + i) * Q + big.off + j] = g_lam_big[i * qb + j];
    for (int k = 0; k < n_oth; k++) { /* rr's -2 b'(Z'y - Z'W beta) depends on beta */
        const FactorSums *f = &oth[k];
        for (int g = 0; g < f->G; g++) {
            const double *bg = b + start[k] + (size_t)g * f->q;
            for (int j = 0; j < n_beta; j++) {
                double t = 0.0;
                for (int i = 0; i < f->q; i++) t += f->ZtW[((size_t)g * f->q + i) * n_beta + j] * bg[i];
                g_beta[j] -= t / s2;
            }
        }
    }
    if (mapped) { /* b moves beta = beta' - c: dlp/db_g -= A_g w, w_j = dlp/dxm_j / beta_j (c in standardised units) */
        double w[nb];
        for (int j = 0; j < n_beta; j++) w[j] = (grad[j] + g_beta[j] * dxdz[j]) / P.beta_[j];
        for (int k = 0; k < n_oth; k++)
            for (size_t i = start[k]; i < start[k + 1]; i++) {
                const double *A = proj[k] + (i - start[k]) * n_beta;
                double t = 0.0;
                for (int j = 0; j < n_beta; j++) t += A[j] * w[j];
                g_b[i] -= t;
            }
    }
    for (int k = 0; k < n_oth; k++) {
        const FactorSums *f = &oth[k];
        const int q = f->q;
        const double *L = Lam + f->off * Q + f->off;
        double *gL = g_lam + f->off * Q + f->off;
        for (size_t at = start[k]; at < start[k + 1]; at += q) {
            const double *zg = z + at, *gg = g_b + at;
            double *gzg = g_z + at;
            for (int j = 0; j < q; j++) { /* b = Lam_k z: dl/dz = Lam_k' dl/db, dl/dLam_k += dl/db z' */
                double t = 0.0;
                for (int i = j; i < q; i++) {
                    t += L[i * Q + j] * gg[i];
                    gL[i * Q + j] += gg[i] * zg[j];
                }
                gzg[j] = t - zg[j];
            }
            if (!centred[k]) continue;
            const double *ck = cent[k];
            for (int i = q - 1; i >= 0; i--) { /* z = M^-1 x: dl/dx = M^-T dl/dz, dl/dLam_k -= (dl/dx) z' on M's Lam rows */
                double t = gzg[i];
                for (int j = i + 1; j < q; j++)
                    if (ck[j] != 0.0) t -= L[j * Q + i] * gzg[j];
                gzg[i] = ck[i] != 0.0 ? t / L[i * Q + i] : t;
            }
            for (int i = 0; i < q; i++)
                for (int j = 0; ck[i] != 0.0 && j <= i; j++) gL[i * Q + j] -= gzg[i] * zg[j];
        }
        for (int i = 0; i < q; i++)
            if (cent[k][i] != 0.0) gL[i * Q + i] -= f->G / L[i * Q + i];
    }
    for (int k = 0; mapped && k < n_oth; k++) householder(g_z + start[k], oth[k].G, oth[k].q); /* H' = H */
    free(b);
    chain_back(&P, vals, dxdz, Lcorr, cpc, g_beta, &g_sigma, g_lam, grad);
    return lp + ll;
}

/* nutpie's log-density callback around a log density: 0 on success, nonzero codes as nutpie's numba callbacks
 * use them. */
typedef double (*LogDensity)(const double *x, double *grad, const double *buf);
static int64_t callback(uint64_t dim, const double *x, double *out, double *logp, const double *buf,
                        LogDensity f) {
    if (dim != (uint64_t)buf[1]) return -1;
    double value = f(x, out, buf);
    *logp = value;
    for (uint64_t i = 0; i < dim; i++)
        if (!isfinite(out[i])) return 3;
    if (!isfinite(value)) return 4;
    return 0;
}

int64_t pc_logp(uint64_t dim, const double *x, double *out, double *logp, const double *buf) {
    return callback(dim, x, out, logp, buf, pc_log_density);
}

/* ---------------------------------------------------------------------------------------------
 * Any set of factors with few effects in all (kernel.py's FactorsKernel, DenseEffects): every random effect
 * integrated out with one dense m x m Cholesky, the one-factor algebra with a single "level" of m effects,
 * ordered factor by factor, level by level, term by term. Lam_full is block diagonal (each factor's Lam
 * once per level), so its products cost O(m^2 q), and the gradient by Lam needs only the diagonal blocks
 * of dl/dLam_full: what is left is the Cholesky and A^-1 (2 m^3 / 3). Scratch space, 4 m^2 floats, is on
 * the heap. */
typedef struct {
    int m, n_f;
    const double *spec; /* per factor: sd offset, q, levels */
} DenseLayout;

/* Each effect's block start, block size and Lam row index (sd offset + term), from the layout. */
static void dense_index(const DenseLayout *D, int *bs, int *bq, int *lam) {
    for (int f = 0, e = 0; f < D->n_f; f++) {
        const int off = (int)D->spec[3 * f], q = (int)D->spec[3 * f + 1], G = (int)D->spec[3 * f + 2];
        for (int g = 0; g < G; g++)
            for (int t = 0; t < q; t++, e++) { bs[e] = e - t; bq[e] = q; lam[e] = off + t; }
    }
}

double dense_log_density(const double *x, double *grad, const double *buf) {
    const int n_beta = (int)buf[2], Q = (int)buf[3], m = (int)buf[4], n_cor = (int)buf[5], p = n_beta;
    const double n = buf[6], yty = buf[7];
    Priors P;
    const double *o = read_priors(&P, buf + HEADER, n_beta, 1, Q, n_cor);
    const double *shift = o; o += n_beta;
    const double *WtW = o; o += (size_t)n_beta * n_beta;
    const double *Wty = o; o += n_beta;
    DenseLayout D = {m, (int)o[0], o + 1};
    o += 1 + 3 * D.n_f;
    const double *ZtZ = o; o += (size_t)m * m;
    const double *ZtW = o; o += (size_t)m * n_beta;
    const double *Zty = o;

    const int nb = n_beta > 0 ? n_beta : 1, nc = n_cor > 0 ? 2 * n_cor : 1;
    double vals[P.k], dxdz[P.k], beta[nb], g_beta[nb], cpc[nc];
    double Lcorr[Q * Q], Lam[Q * Q], g_lam[Q * Q];
    double lp = prior_part(&P, x, grad, vals, dxdz, Lcorr, cpc, Lam);
    for (int k = 0; k < n_beta; k++) beta[k] = vals[k] - shift[k];
    const double sigma = vals[n_beta], s2 = sigma * sigma, s4 = s2 * s2;
    const size_t mm = (size_t)m * m;
    double *M = malloc(sizeof(double) * (4 * mm + 4 * (size_t)m) + sizeof(int) * 3 * (size_t)m);
    if (!M) return NAN;
    double *A = M + mm, *B = A + mm, *GA = B + mm, *r = GA + mm, *c = r + m, *v = c + m, *mv = v + m;
    int *bs = (int *)(mv + m), *bq = bs + m, *lam = bq + m;
    dense_index(&D, bs, bq, lam);
#define LAM(i, j) Lam[lam[i] * Q + lam[j]] /* Lam_full[i][j] for i, j in one block */

    double rr = yty, g_s2 = 0.0, logdet = 0.0, quad = 0.0;
    for (int i = 0; i < p; i++) {
        double wb = 0.0;
        for (int j = 0; j < p; j++) wb += WtW[i * p + j] * beta[j];
        rr += beta[i] * (wb - 2.0 * Wty[i]);
        g_beta[i] = (Wty[i] - wb) / s2;
    }
    for (int e = 0; e < m; e++) {
        double t = Zty[e];
        for (int j = 0; j < p; j++) t -= ZtW[(size_t)e * p + j] * beta[j];
        r[e] = t;
    }
    for (int e = 0; e < m; e++) { /* c = Lam_full' r */
        double t = 0.0;
        for (int k = bs[e]; k < bs[e] + bq[e]; k++) t += LAM(k, e) * r[k];
        c[e] = t;
    }
    for (int i = 0; i < m; i++) /* M = Z'Z Lam_full */
        for (int e = 0; e < m; e++) {
            double t = 0.0;
            for (int k = bs[e]; k < bs[e] + bq[e]; k++) t += ZtZ[(size_t)i * m + k] * LAM(k, e);
            M[(size_t)i * m + e] = t;
        }
    for (int i = 0; i < m; i++) /* B = Lam_full' M / s2 = A - I; A's lower triangle, factored in place */
        for (int j = 0; j <= i; j++) {
            double t = 0.0;
            for (int k = bs[i]; k < bs[i] + bq[i]; k++) t += LAM(k, i) * M[(size_t)k * m + j];
            B[(size_t)i * m + j] = B[(size_t)j * m + i] = t / s2;
            A[(size_t)i * m + j] = t / s2 + (i == j ? 1.0 : 0.0);
        }
    if (!cholesky_inplace(A, m)) { free(M); return -INFINITY; }
    for (int i = 0; i < m; i++) logdet += 2.0 * log(A[(size_t)i * m + i]);
    for (int i = 0; i < m; i++) { /* v = L^-1 c */
        double t = c[i];
        for (int k = 0; k < i; k++) t -= A[(size_t)i * m + k] * v[k];
        v[i] = t / A[(size_t)i * m + i];
        quad += v[i] * v[i];
    }
    for (int i = m - 1; i >= 0; i--) { /* mv = L'^-1 v = A^-1 c */
        double t = v[i];
        for (int k = i + 1; k < m; k++) t -= A[(size_t)k * m + i] * mv[k];
        mv[i] = t / A[(size_t)i * m + i];
    }
    /* L^-1 into A's upper triangle's mirror: Li (lower) overwrites L column by column from the right */
    for (int j = m - 1; j >= 0; j--) {
        /* column j of L^-1: Li[j][j] = 1 / L[j][j]; Li[i][j] = -(sum_{k=j}^{i-1} L[i][k] Li[k][j]) / L[i][i] */
        double *Li = GA; /* GA holds L^-1 for now (lower triangle) */
        Li[(size_t)j * m + j] = 1.0 / A[(size_t)j * m + j];
        for (int i = j + 1; i < m; i++) {
            double t = 0.0;
            for (int k = j; k < i; k++) t -= A[(size_t)i * m + k] * Li[(size_t)k * m + j];
            Li[(size_t)i * m + j] = t / A[(size_t)i * m + i];
        }
    }
    /* GA = -(A^-1 + mv mv' / s4) / 2 with A^-1 = Li' Li, into A (no longer needed), symmetric */
    for (int i = 0; i < m; i++)
        for (int j = 0; j <= i; j++) {
            double t = 0.0;
            for (int k = i; k < m; k++) t += GA[(size_t)k * m + i] * GA[(size_t)k * m + j];
            A[(size_t)i * m + j] = A[(size_t)j * m + i] = -0.5 * (t + mv[i] * mv[j] / s4);
        }
    double trace = 0.0;
    for (size_t i = 0; i < mm; i++) trace += A[i] * B[i]; /* both symmetric */
    g_s2 -= trace / s2;
    for (int e = 0; e < m; e++) { /* dl/dc = mv / s4; dl/dbeta -= Z'W' Lam_full dl/dc */
        double t = 0.0;
        for (int k = bs[e]; k < bs[e] + bq[e]; k++) t += LAM(e, k) * mv[k];
        for (int j = 0; j < p; j++) g_beta[j] -= ZtW[(size_t)e * p + j] * t / s4;
    }
    for (int i = 0; i < Q * Q; i++) g_lam[i] = 0.0;
    for (int e = 0; e < m; e++) /* the diagonal blocks of dl/dLam_full = 2 M GA / s2 + r (dl/dc)' */
        for (int f = bs[e]; f < bs[e] + bq[e]; f++) {
            double t = 0.0;
            for (int k = 0; k < m; k++) t += M[(size_t)e * m + k] * A[(size_t)k * m + f];
            g_lam[lam[e] * Q + lam[f]] += 2.0 * t / s2 + r[e] * mv[f] / s4;
        }
#undef LAM
    free(M);
    g_s2 += -0.5 * n / s2 + 0.5 * rr / s4 - quad / (s4 * s2);
    double g_sigma = 2.0 * sigma * g_s2;
    chain_back(&P, vals, dxdz, Lcorr, cpc, g_beta, &g_sigma, g_lam, grad);
    return lp + -0.5 * (n * (LOG_2PI + log(s2)) + logdet + (rr - quad / s2) / s2);
}

int64_t dense_logp(uint64_t dim, const double *x, double *out, double *logp, const double *buf) {
    return callback(dim, x, out, logp, buf, dense_log_density);
}

/* ---------------------------------------------------------------------------------------------
 * GLMMs (kernel.py's GlmmKernel documents the buffer): one grouping factor, the random effects
 * b_g = Lam v_g with v_g ~ N(0, I), integrated out group by group by adaptive Gauss-Hermite
 * quadrature around the mode of h_g(v) = sum_i w_i l_i(eta0_i + z_i' Lam v) - |v|^2/2:
 *   log p(y_g) = -log|L| + log sum_k omega_k exp(h_g(v_k) + |z_k|^2/2),   v_k = vhat + L'^-1 z_k,
 * with H = L L' the negative Hessian of h_g at its mode vhat (constants dropped). The gradient is the
 * quadrature of Fisher's identity, E[d/dtheta log p(y, v | theta) | y] with the nodes held fixed: it
 * differs from the derivative of the quadrature by the quadrature error of an integral that is zero.
 * NUTS stays exact for the value it is given (leapfrog with any position-dependent force preserves
 * volume and is reversible), so this costs at most efficiency, never correctness.
 * The mode is found by Newton's method with step halving (h_g is strictly concave for these
 * log-concave families); each thread keeps the last modes as starting points. Groups with many rows may use
 * one node, the Laplace approximation, whose gradient is then exact (laplace_group).
 * --------------------------------------------------------------------------------------------- */
#define GHEADER 13 /* total, n_dim, n_beta, q, G, n_cor, N, n_dpar, family, nodes of rule 0, max rows per group,
                      nodes of rule 1, precomputed nodes per group of rule 2 (0: none) */

enum { GLMM_BINOMIAL_LOGIT = 1, GLMM_POISSON_LOG = 2, GLMM_NEGBINOMIAL_LOG = 3, GLMM_BINOMIAL_PROBIT = 4,
       GLMM_BINOMIAL_CLOGLOG = 5, GLMM_GAMMA_LOG = 6 };

static double digamma(double x) { /* x > 0: recurrence up to 6, then the asymptotic series */
    double r = 0.0;
    while (x < 6.0) { r -= 1.0 / x; x += 1.0; }
    double f = 1.0 / (x * x);
    return r + log(x) - 0.5 / x - f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))));
}

/* log Phi(x) and the derivatives of log Phi: lam = phi(x) / Phi(x), and lam' = -lam (x + lam), lam''. Below
 * x = -37 erfc's result would leave the doubles, so Phi(x) = phi(x) S(x) / (-x) with Mills's asymptotic series
 * S = 1 - 1/x^2 + 3/x^4 - 15/x^6 + 105/x^8 (next term 2e-13 there); x + lam is then taken from the series too,
 * since -x and lam nearly cancel. */
static double log_Phi(double x, double *lam, double *dlam, double *d2lam) {
    double lp, xl; /* xl = x + lam */
    if (x >= -37.0) {
        lp = log(0.5 * erfc(-x * 0.7071067811865476));
        *lam = exp(-0.5 * x * x - 0.9189385332046727 - lp);
        xl = x + *lam;
    } else {
        const double r = 1.0 / (x * x), S = 1.0 - r * (1.0 - r * (3.0 - r * (15.0 - 105.0 * r)));
        lp = -0.5 * x * x - 0.9189385332046727 - log(-x) + log(S);
        *lam = -x / S;
        xl = (-1.0 / x) * (1.0 - r * (3.0 - r * (15.0 - 105.0 * r))) / S; /* x (S - 1) / S */
    }
    *dlam = -*lam * xl;
    *d2lam = -*dlam * xl - *lam * (1.0 + *dlam);
    return lp;
}

/* For the complementary log-log link, p = 1 - exp(-m), m = exp(eta): log p = log(1 - e^-m) and its derivatives
 * by eta, g = m / expm1(m), g' = g (1 - g - m), g'' = g' (1 - 2 g - m) - g m. 1 - g by its series where m is tiny
 * (it would cancel). */
static double log_p_cloglog(double m, double *g, double *dg, double *d2g) {
    const double lp = m <= 0.6931471805599453 ? log(-expm1(-m)) : log1p(-exp(-m));
    *g = m < 1e300 ? m / expm1(m) : 0.0; /* expm1 overflows to inf past m = 709: g is then 0 */
    const double one_minus_g = m < 1e-5 ? m * (0.5 - m / 12.0) : 1.0 - *g;
    *dg = *g * (one_minus_g - m);
    *d2g = *dg * (one_minus_g - *g - m) - *g * m;
    return lp;
}

/* One row's log-likelihood up to constants in theta, its first and second derivatives by eta and its
 * derivative by the shape phi (negative binomial). */
static double row_ll(int fam, double y, double n, double eta, double phi, double *d1, double *d2, double *dphi) {
    switch (fam) {
    case GLMM_BINOMIAL_PROBIT: { /* y log Phi(eta) + (n - y) log Phi(-eta) */
        double l1, dl1, d2l1, l0, dl0, d2l0;
        const double a = log_Phi(eta, &l1, &dl1, &d2l1), b = log_Phi(-eta, &l0, &dl0, &d2l0);
        *d1 = y * l1 - (n - y) * l0; *d2 = y * dl1 + (n - y) * dl0;
        return (y > 0.0 ? y * a : 0.0) + (n - y > 0.0 ? (n - y) * b : 0.0);
    }
    case GLMM_BINOMIAL_CLOGLOG: { /* y log(1 - e^-m) - (n - y) m */
        const double m = exp(eta);
        double g, dg, d2g;
        const double a = log_p_cloglog(m, &g, &dg, &d2g), nm = n - y > 0.0 ? (n - y) * m : 0.0;
        *d1 = y * g - nm; *d2 = y * dg - nm;
        return (y > 0.0 ? y * a : 0.0) - nm;
    }
    case GLMM_BINOMIAL_LOGIT: { /* one exp: e = exp(-|eta|) gives p and log(1 + exp(eta)) */
        double e = exp(-fabs(eta)), p = eta >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        *d1 = y - n * p; *d2 = -n * p * (1.0 - p);
        return y * eta - n * (fmax(eta, 0.0) + log1p(e));
    }
    case GLMM_POISSON_LOG: {
        double mu = n * exp(eta); /* n: how many rows were summed into this one */
        *d1 = y - mu; *d2 = -mu;
        return y * eta - mu;
    }
    case GLMM_GAMMA_LOG: { /* shape phi, mean e^eta: -phi (eta + y e^-eta); the terms in phi alone: row_ll_phi */
        const double r = y * exp(-eta);
        *d1 = phi * (r - 1.0); *d2 = -phi * r;
        *dphi = -(eta + r);
        return -phi * (eta + r);
    }
    default: { /* GLMM_NEGBINOMIAL_LOG; the terms in phi alone are in row_ll_phi */
        double lphi = log(phi);
        double lt = eta > lphi ? eta + log1p(exp(lphi - eta)) : lphi + log1p(exp(eta - lphi)); /* log(phi + mu) */
        double r = exp(eta - lt), s = exp(lphi - lt);                                         /* mu, phi over phi + mu */
        *d1 = y - (y + phi) * r; *d2 = -(y + phi) * r * s;
        *dphi = lphi + 1.0 - lt - (y + phi) * exp(-lt);
        return phi * (lphi - lt) + y * (eta - lt);
    }
    }
}

/* A row's third derivative by eta and, for the negative binomial, the derivatives of d1 and d2 by phi
 * (the Laplace approximation's gradient needs them; see laplace_group). */
static double row_d3(int fam, double y, double n, double eta, double phi, double *d1_phi, double *d2_phi) {
    *d1_phi = 0.0; *d2_phi = 0.0;
    switch (fam) {
    case GLMM_BINOMIAL_PROBIT: {
        double l1, dl1, d2l1, l0, dl0, d2l0;
        log_Phi(eta, &l1, &dl1, &d2l1);
        log_Phi(-eta, &l0, &dl0, &d2l0);
        return y * d2l1 - (n - y) * d2l0;
    }
    case GLMM_BINOMIAL_CLOGLOG: {
        const double m = exp(eta);
        double g, dg, d2g;
        log_p_cloglog(m, &g, &dg, &d2g);
        return y * d2g - (n - y > 0.0 ? (n - y) * m : 0.0);
    }
    case GLMM_BINOMIAL_LOGIT: {
        double p = sigmoid(eta);
        return -n * p * (1.0 - p) * (1.0 - 2.0 * p);
    }
    case GLMM_POISSON_LOG:
        return -n * exp(eta);
    case GLMM_GAMMA_LOG: {
        const double r = y * exp(-eta);
        *d1_phi = r - 1.0; *d2_phi = -r;
        return phi * r;
    }
    default: {
        double lphi = log(phi);
        double lt = eta > lphi ? eta + log1p(exp(lphi - eta)) : lphi + log1p(exp(eta - lphi));
        double r = exp(eta - lt), s = exp(lphi - lt), mu = exp(eta), inv = exp(-lt);
        *d1_phi = r * (y - mu) * inv;
        *d2_phi = -r * s - (y + phi) * r * (r - s) * inv;
        return -(y + phi) * r * s * (s - r);
    }
    }
}

/* The part of a row's log-likelihood that depends on the family's parameter but not on eta (so not on
 * the random effects either: it leaves the quadrature), and its derivative by phi. */
/* Gamma's terms in the shape phi alone over rows of total weight sw and sum_i w_i log y_i = swl: phi (log phi sw +
 * swl) - lgamma(phi) sw (the density's -log y is a constant), and their derivative by phi into *dphi. */
static double gamma_phi_terms(double phi, double sw, double swl, double *dphi) {
    const double lp = log(phi);
    *dphi = sw * (lp + 1.0 - digamma(phi)) + swl;
    return phi * (lp * sw + swl) - lgamma(phi) * sw;
}

static double row_ll_phi(int fam, double y, double phi, double *dphi) {
    if (fam == GLMM_GAMMA_LOG) return gamma_phi_terms(phi, 1.0, log(y), dphi);
    if (fam != GLMM_NEGBINOMIAL_LOG) { *dphi = 0.0; return 0.0; }
    *dphi = digamma(y + phi) - digamma(phi);
    return lgamma(y + phi) - lgamma(phi);
}

/* The quadrature rules, `rule` per group: 0 for groups with few rows, 1 (fewer nodes) for groups with many,
 * whose conditional distributions are close to normal; 2 (small) and 3 (large groups) read nodes precomputed once
 * per fit (fixed_group) instead of the rows: beta_hat (p), then per group A_g (q x p), delta (K x q) and c (K),
 * K = n_fixed, and for gamma per group S (K) and (sum w, sum w log y). Odd rules mark the large groups (fewer
 * Metropolis steps in glmm_draw). */
typedef struct {
    Priors P;
    int p, q, G, N, fam, n_nodes[2], max_nodes, max_ng, n_fixed;
    const double *nodes[2], *logw[2], *rule, *starts, *W, *Z, *y, *ntr, *off, *w;
    const double *beta_hat, *A, *delta, *fc;
    /* gamma's precomputed nodes (its shape phi scales the eta part, l_g = phi S_g(theta) + terms in phi alone):
     * S_gk per group and node, and per group sum w_i and sum w_i log y_i; NULL for the other families */
    const double *fs, *phi_sums;
} Glmm;

static void read_glmm(Glmm *m, const double *buf) {
    m->p = (int)buf[2]; m->q = (int)buf[3]; m->G = (int)buf[4]; m->N = (int)buf[6];
    m->fam = (int)buf[8]; m->n_nodes[0] = (int)buf[9]; m->max_ng = (int)buf[10]; m->n_nodes[1] = (int)buf[11];
    m->n_fixed = (int)buf[12];
    m->max_nodes = m->n_nodes[0] > m->n_nodes[1] ? m->n_nodes[0] : m->n_nodes[1];
    if (m->n_fixed > m->max_nodes) m->max_nodes = m->n_fixed;
    const double *o = read_priors(&m->P, buf + GHEADER, m->p, (int)buf[7], m->q, (int)buf[5]);
    for (int r = 0; r < 2; r++) {
        m->nodes[r] = o; o += (size_t)m->n_nodes[r] * m->q;
        m->logw[r] = o; o += m->n_nodes[r];
    }
    m->rule = o; o += m->G;
    m->starts = o; o += m->G + 1;
    m->W = o; o += (size_t)m->N * m->p;
    m->Z = o; o += (size_t)m->N * m->q;
    m->y = o; o += m->N;
    m->ntr = o; o += m->N;
    m->off = o; o += m->N;
    m->w = o; o += m->N;
    m->beta_hat = o; o += m->p;
    m->A = o; o += (size_t)m->n_fixed ? (size_t)m->G * m->q * m->p : 0;
    m->delta = o; o += (size_t)m->G * m->n_fixed * m->q;
    m->fc = o; o += (size_t)m->G * m->n_fixed;
    m->fs = m->phi_sums = NULL;
    if (m->n_fixed && m->fam == GLMM_GAMMA_LOG) { m->fs = o; o += (size_t)m->G * m->n_fixed; m->phi_sums = o; }
}

/* Per-thread memory: the last modes (warm starts) of the buffer they belong to, and scratch space. */
typedef struct {
    const double *owner;
    size_t n_modes, cap;
    double *modes, *scratch;
} Tls;
static _Thread_local Tls tls;

static int tls_ready(const Glmm *m, const double *buf) {
    size_t n_modes = (size_t)m->G * m->q;
    /* eta0, t, then either the nodes' d1 (and dphi) or laplace_group's per-row store, then the nodes */
    size_t per_row = (size_t)m->max_nodes * (1 + m->P.n_dpar);
    if (per_row < (size_t)(4 + m->q)) per_row = 4 + m->q;
    size_t need = (size_t)m->max_ng * (1 + m->q + per_row) + (size_t)m->max_nodes * (2 + m->q);
    if (tls.owner != buf || tls.n_modes != n_modes) {
        free(tls.modes);
        tls.modes = calloc(n_modes > 0 ? n_modes : 1, sizeof(double));
        tls.owner = buf; tls.n_modes = n_modes;
    }
    if (tls.cap < need) {
        free(tls.scratch);
        tls.scratch = malloc(need * sizeof(double));
        tls.cap = tls.scratch ? need : 0;
    }
    return tls.modes != NULL && tls.scratch != NULL;
}

#ifdef HAVE_V2D
/* group_h's value for logit rows, two at a time while both rows are bernoulli of unit weight (q <= 2 terms):
 * sum [y eta - max(eta, 0) - log(1 + e^-|eta|)], the logs as a product over blocks of rows. Stops at the first
 * pair that is not, and leaves its index in *stop for the scalar loop. glmm_draw's Metropolis steps are each a pass
 * over the group's rows: at 10^6 rows they were most of the fit. */
WIDE_CLONES static double logit_value_pairs(int n, int q, const double *y, const double *ntr, const double *w,
                                            const double *eta0, const double *t, const double *v, int *stop) {
    const v2d_t zero = {0.0, 0.0}, one = {1.0, 1.0};
    const v2l_t sign = {(long long)0x8000000000000000ULL, (long long)0x8000000000000000ULL};
    v2d_t sum = zero, prod = one, yy, e0;
    int i = 0;
    for (; i + 1 < n; i += 2) {
        if (w[i] != 1.0 || w[i + 1] != 1.0 || ntr[i] != 1.0 || ntr[i + 1] != 1.0) break;
        memcpy(&e0, eta0 + i, sizeof e0); memcpy(&yy, y + i, sizeof yy);
        v2d_t eta = e0;
        for (int a = 0; a < q; a++) { const v2d_t ta = {t[i * q + a], t[(i + 1) * q + a]}; eta += ta * v[a]; }
        const v2d_t e = exp_nonpositive2((v2d_t)((v2l_t)eta | sign));
        sum += yy * eta - select2(eta >= zero, eta, zero);
        prod *= one + e;
        if ((i & 127) == 126) { sum[0] -= log(prod[0] * prod[1]); prod = one; }
    }
    *stop = i;
    return sum[0] + sum[1] - log(prod[0] * prod[1]);
}
#endif

#ifdef HAVE_V2D
/* group_h's log-likelihood with its gradient (added to G_) and negative Hessian (lower half added to H, q x q) for
 * logit rows, two at a time while both rows are bernoulli of unit weight (q <= 2 terms); *stop as in
 * logit_value_pairs. Newton's passes, a few per group and gradient, cost as much as the nodes' vector passes. */
WIDE_CLONES static double logit_unit_h(int n, int q, const double *y, const double *ntr, const double *w,
                                       const double *eta0, const double *t, const double *v, double *G_, double *H,
                                       int *stop) {
    const v2d_t zero = {0.0, 0.0}, one = {1.0, 1.0};
    const v2l_t sign = {(long long)0x8000000000000000ULL, (long long)0x8000000000000000ULL};
    v2d_t sum = zero, prod = one, yy, e0, g[2] = {zero, zero}, hh[3] = {zero, zero, zero}, ta[2];
    double logs = 0.0;
    int i = 0;
    for (; i + 1 < n; i += 2) {
        if (w[i] != 1.0 || w[i + 1] != 1.0 || ntr[i] != 1.0 || ntr[i + 1] != 1.0) break;
        memcpy(&e0, eta0 + i, sizeof e0); memcpy(&yy, y + i, sizeof yy);
        v2d_t eta = e0;
        for (int a = 0; a < q; a++) {
            ta[a] = (v2d_t){t[i * q + a], t[(i + 1) * q + a]};
            eta += ta[a] * v[a];
        }
        const v2d_t e = exp_nonpositive2((v2d_t)((v2l_t)eta | sign)), ope = one + e, inv = one / ope;
        const v2l_t pos = eta >= zero;
        const v2d_t d1 = yy - select2(pos, inv, e * inv), cv = e * inv * inv; /* cv = p (1 - p) = -l2 */
        sum += yy * eta - select2(pos, eta, zero);
        prod *= ope;
        if ((i & 127) == 126) { logs += log(prod[0] * prod[1]); prod = one; }
        for (int a = 0, k = 0; a < q; a++) {
            g[a] += d1 * ta[a];
            for (int b = 0; b <= a; b++, k++) hh[k] += cv * ta[a] * ta[b];
        }
    }
    *stop = i;
    for (int a = 0, k = 0; a < q; a++) {
        G_[a] += g[a][0] + g[a][1];
        for (int b = 0; b <= a; b++, k++) H[a * q + b] += hh[k][0] + hh[k][1];
    }
    return sum[0] + sum[1] - logs - log(prod[0] * prod[1]);
}
#endif

/* h_g(v) and, if G_ and H are given, its gradient and negative Hessian, over the group's n rows; if store is
 * given, each row's l1 and l2 into store[i width] and store[i width + 2] (laplace_group's layout). */
static double group_h(const Glmm *m, int n, const double *y, const double *ntr, const double *w, const double *eta0,
                      const double *t, double phi, const double *v, double *G_, double *H,
                      double *store, int width) {
    const int q = m->q;
    double h = 0.0, d1, d2, dphi;
    for (int a = 0; a < q; a++) h -= 0.5 * v[a] * v[a];
    if (!G_ && !store && m->fam == GLMM_BINOMIAL_LOGIT) { /* the value alone (glmm_draw's steps): node_pass's trick */
        double prod = 1.0;
        int i = 0;
#ifdef HAVE_V2D
        if (q <= 2) { h += logit_value_pairs(n, q, y, ntr, w, eta0, t, v, &i); }
#endif
        for (; i < n; i++) {
            double eta = eta0[i];
            for (int a = 0; a < q; a++) eta += t[i * q + a] * v[a];
            const double e = exp(-fabs(eta)), c = w[i] * ntr[i];
            h += w[i] * y[i] * eta - c * fmax(eta, 0.0);
            if (c == 1.0) prod *= 1.0 + e; /* in [1, 2]: 64 factors cannot overflow */
            else h -= c * log1p(e);
            if ((i & 63) == 63) { h -= log(prod); prod = 1.0; }
        }
        return h - log(prod);
    }
    if (G_) {
        for (int a = 0; a < q; a++) {
            G_[a] = -v[a];
            for (int b = 0; b < q; b++) H[a * q + b] = a == b ? 1.0 : 0.0;
        }
    }
    int i = 0;
#ifdef HAVE_V2D
    if (G_ && !store && m->fam == GLMM_BINOMIAL_LOGIT && q <= 2)
        h += logit_unit_h(n, q, y, ntr, w, eta0, t, v, G_, H, &i);
#endif
    for (; i < n; i++) {
        double eta = eta0[i];
        for (int a = 0; a < q; a++) eta += t[i * q + a] * v[a];
        h += w[i] * row_ll(m->fam, y[i], ntr[i], eta, phi, &d1, &d2, &dphi);
        if (store) { store[(size_t)i * width] = d1; store[(size_t)i * width + 2] = d2; }
        if (G_) {
            for (int a = 0; a < q; a++) {
                G_[a] += w[i] * d1 * t[i * q + a];
                for (int b = 0; b <= a; b++) H[a * q + b] -= w[i] * d2 * t[i * q + a] * t[i * q + b];
            }
        }
    }
    if (G_)
        for (int a = 0; a < q; a++)
            for (int b = a + 1; b < q; b++) H[a * q + b] = H[b * q + a];
    return h;
}

/* Solve (L L') x = r for x, L lower (row-major, q x q). */
static void chol_solve(const double *L, int q, const double *r, double *x) {
    double tmp[q];
    for (int i = 0; i < q; i++) {
        double s = r[i];
        for (int k = 0; k < i; k++) s -= L[i * q + k] * tmp[k];
        tmp[i] = s / L[i * q + i];
    }
    for (int i = q - 1; i >= 0; i--) {
        double s = tmp[i];
        for (int k = i + 1; k < q; k++) s -= L[k * q + i] * x[k];
        x[i] = s / L[i * q + i];
    }
}

/* (L L')^-1 (q x q), column by column: once per group, so that each row's H^-1 t_i is a product, not two solves. */
static void chol_inverse(const double *L, int q, double *inv) {
    double e[q], col[q];
    for (int a = 0; a < q; a++) {
        for (int b = 0; b < q; b++) e[b] = a == b ? 1.0 : 0.0;
        chol_solve(L, q, e, col);
        for (int b = 0; b < q; b++) inv[b * q + a] = col[b];
    }
}

/* Solve L' x = z (the node's offset from the mode). */
static void chol_back(const double *L, int q, const double *z, double *x) {
    for (int i = q - 1; i >= 0; i--) {
        double s = z[i];
        for (int k = i + 1; k < q; k++) s -= L[k * q + i] * x[k];
        x[i] = s / L[i * q + i];
    }
}

/* The mode of h_g from v (updated in place), to a last Newton step below tol, and the Cholesky factor L of the
 * negative Hessian there. Returns h_g at the mode, or NAN if Newton's method failed (non-finite values).
 * AGQ is exact for any centring up to its quadrature error, so there a mode off by 1e-7 moves the value by
 * about 1e-7 times that error (a pass saved); the Laplace gradient (envelope theorem) needs the mode itself.
 * With store, the rows' l1 and l2 at the returned mode are left there (see group_h); with pending, the Newton
 * step that was below tol and not taken (see polish_mode). */
static double newton(const Glmm *m, int n, const double *y, const double *ntr, const double *w,
                     const double *eta0, const double *t, double phi, double *v, double *L, double tol,
                     double *store, int width, double *pending) {
    const int q = m->q;
    double G_[q], H[q * q], step[q], trial[q], Gt[q], Ht[q * q];
    if (pending)
        for (int a = 0; a < q; a++) pending[a] = 0.0;
    double h = group_h(m, n, y, ntr, w, eta0, t, phi, v, G_, H, store, width);
    if (!isfinite(h)) {
        for (int a = 0; a < q; a++) v[a] = 0.0;
        h = group_h(m, n, y, ntr, w, eta0, t, phi, v, G_, H, store, width);
    }
    for (int it = 0; it < 200 && isfinite(h); it++) {
        for (int i = 0; i < q * q; i++) L[i] = H[i];
        if (!cholesky_inplace(L, q)) return NAN;
        chol_solve(L, q, G_, step);
        double size = 0.0, dec = 0.0; /* dec: the Newton decrement G'H^-1 G, twice the step's expected gain */
        for (int a = 0; a < q; a++) { size = fmax(size, fabs(step[a])); dec += step[a] * G_[a]; }
        /* Converged: a step below tol, or a gain far below h's rounding. With counts of 1e5 the gradient's
         * rounding alone gives negative binomial steps of 1e-10 (its curvature per row saturates at the shape),
         * which tol = 1e-11 never sees; their gain is about 1e-20, far below h's digits. */
        if (size < tol || dec <= 1e-20 * (1.0 + fabs(h))) {
            if (pending)
                for (int a = 0; a < q; a++) pending[a] = step[a];
            return h;
        }
        double scale = 1.0, ht = -INFINITY;
        for (int half = 0; half < 60; half++, scale *= 0.5) {
            for (int a = 0; a < q; a++) trial[a] = v[a] + scale * step[a];
            ht = group_h(m, n, y, ntr, w, eta0, t, phi, trial, Gt, Ht, store, width); /* the last one is v's */
            if (isfinite(ht) && ht >= h - 1e-12 * fabs(h)) break;
        }
        if (!isfinite(ht)) return NAN;
        for (int a = 0; a < q; a++) v[a] = trial[a];
        for (int i = 0; i < q * q; i++) H[i] = Ht[i];
        for (int a = 0; a < q; a++) G_[a] = Gt[a];
        h = ht;
    }
    return NAN; /* not converged: a value away from the mode would be silently wrong */
}

/* newton from the warm start v, and from v = 0 (the prior's mode) where that fails. A warm start left by an
 * extreme point (a divergent trajectory with a large sd) can sit where exp overflows in the Hessian; without
 * the second try every later call would start there and fail again, and the chain would stop moving. */
static double group_mode(const Glmm *m, int n, const double *y, const double *ntr, const double *w,
                         const double *eta0, const double *t, double phi, double *v, double *L, double tol,
                         double *store, int width, double *pending) {
    double h = newton(m, n, y, ntr, w, eta0, t, phi, v, L, tol, store, width, pending);
    if (isfinite(h)) return h;
    for (int a = 0; a < m->q; a++) v[a] = 0.0;
    return newton(m, n, y, ntr, w, eta0, t, phi, v, L, tol, store, width, pending);
}

/* Take group_mode's pending Newton step s (below 1e-5) without another pass with exp over the rows: each row's
 * l1 and l2 by their first-order expansion in de_i = t_i's (l3 from l1 and l2: binomial-logit and Poisson only),
 * H and its factor L rebuilt from them, and h by the quadratic model h + s'Hs/2 (G = H s). Errors are O(|s|^2):
 * the value is then the Laplace approximation at the mode to about 1e-10, as with one more Newton pass. */
static double polish_mode(const Glmm *m, int n, const double *y, const double *ntr, const double *w,
                          const double *t, double *v, const double *step, double h, double *L, double *store,
                          int width) {
    const int q = m->q;
    double H[q * q];
    double quad = 0.0;
    for (int a = 0; a < q; a++) { /* s'Hs = |L's|^2 with the factor at the old point */
        double u = 0.0;
        for (int b = a; b < q; b++) u += L[b * q + a] * step[b];
        quad += u * u;
    }
    for (int a = 0; a < q; a++) {
        v[a] += step[a];
        for (int b = 0; b < q; b++) H[a * q + b] = a == b ? 1.0 : 0.0;
    }
    for (int i = 0; i < n; i++) {
        const double *ti = t + (size_t)i * q;
        double *st = store + (size_t)i * width, de = 0.0;
        for (int a = 0; a < q; a++) de += ti[a] * step[a];
        double d3 = m->fam == GLMM_POISSON_LOG ? st[2]
                  : (ntr[i] > 0.0 ? st[2] * (1.0 - 2.0 * (y[i] - st[0]) / ntr[i]) : 0.0);
        st[0] += st[2] * de;
        st[2] += d3 * de;
        for (int a = 0; a < q; a++)
            for (int b = 0; b <= a; b++) H[a * q + b] -= w[i] * st[2] * ti[a] * ti[b];
    }
    for (int a = 0; a < q; a++)
        for (int b = 0; b <= a; b++) L[a * q + b] = H[a * q + b];
    return cholesky_inplace(L, q) ? h + 0.5 * quad : NAN;
}

/* The group's linear predictor without its random effects, and t_i = Lam' z_i. */
static void group_rows(const Glmm *m, int s, int n, const double *beta, const double *Lam, double *eta0, double *t) {
    const int p = m->p, q = m->q;
    for (int i = 0; i < n; i++) {
        const double *Wi = m->W + (size_t)(s + i) * p, *Zi = m->Z + (size_t)(s + i) * q;
        double e = m->off[s + i];
        for (int j = 0; j < p; j++) e += Wi[j] * beta[j];
        eta0[i] = e;
        for (int b = 0; b < q; b++) {
            double u = 0.0;
            for (int a = 0; a < q; a++) u += Zi[a] * Lam[a * q + b];
            t[i * q + b] = u;
        }
    }
}

/* h_g at every node v_k (into lk, node weights not included) and each row's dl/deta there (d1[i K + k]; dl/dphi
 * into dp). Rows outer, nodes inner. For the logit link with unit weight and trials, log(1 + e^-|eta|) is
 * accumulated as a product of 1 + e^-|eta| over blocks of rows, one log per block (exact to rounding: each
 * factor lies in [1, 2], so a block of 64 cannot overflow), which removes most of the pass's log1p calls. */
WIDE_CLONES static void node_pass(const Glmm *m, int n, const double *y, const double *ntr, const double *w, const double *eta0,
                      const double *t, double phi, int K, const double *vk, double *lk, double *prod, double *d1,
                      double *dp) {
    const int q = m->q;
    double d2, dphi = 0.0;
    for (int k = 0; k < K; k++) {
        lk[k] = 0.0;
        for (int a = 0; a < q; a++) lk[k] -= 0.5 * vk[(size_t)k * q + a] * vk[(size_t)k * q + a];
        prod[k] = 1.0;
    }
#ifdef HAVE_V2D
    double vkT[q * K]; /* the nodes' coordinates by dimension: contiguous pairs of nodes for the vector loop */
    for (int k = 0; k < K; k++)
        for (int a = 0; a < q; a++) vkT[a * K + k] = vk[(size_t)k * q + a];
    const v2d_t zero = {0.0, 0.0}, one = {1.0, 1.0};
    const v2l_t sign = {(long long)0x8000000000000000ULL, (long long)0x8000000000000000ULL};
#endif
    for (int i = 0; i < n; i++) {
        const double *ti = t + (size_t)i * q;
        double *d1i = d1 + (size_t)i * K;
        if (m->fam == GLMM_BINOMIAL_LOGIT) {
            const double yi = y[i], c = w[i] * ntr[i], wy = w[i] * yi;
            int k = 0;
#ifdef HAVE_V2D
            if (w[i] == 1.0 && ntr[i] == 1.0) /* a bernoulli row of unit weight: two nodes at a time */
                for (; k + 1 < K; k += 2) {
                    v2d_t eta = {eta0[i], eta0[i]}, vv, acc;
                    for (int a = 0; a < q; a++) { memcpy(&vv, vkT + a * K + k, sizeof vv); eta += ti[a] * vv; }
                    const v2d_t e = exp_nonpositive2((v2d_t)((v2l_t)eta | sign)), ope = one + e, inv = one / ope;
                    const v2l_t pos = eta >= zero;
                    const v2d_t d = yi - select2(pos, inv, e * inv);
                    memcpy(d1i + k, &d, sizeof d);
                    memcpy(&acc, lk + k, sizeof acc); acc += yi * eta - select2(pos, eta, zero);
                    memcpy(lk + k, &acc, sizeof acc);
                    memcpy(&acc, prod + k, sizeof acc); acc *= ope; memcpy(prod + k, &acc, sizeof acc);
                }
#endif
            for (; k < K; k++) {
                double eta = eta0[i];
                for (int a = 0; a < q; a++) eta += ti[a] * vk[(size_t)k * q + a];
                double e = exp(-fabs(eta)), inv = 1.0 / (1.0 + e), pk = eta >= 0.0 ? inv : e * inv;
                d1i[k] = yi - ntr[i] * pk;
                lk[k] += wy * eta - c * fmax(eta, 0.0);
                if (c == 1.0) prod[k] *= 1.0 + e;
                else lk[k] -= c * log1p(e);
            }
            if ((i & 63) == 63)
                for (int k = 0; k < K; k++) { lk[k] -= log(prod[k]); prod[k] = 1.0; }
        } else {
            int k = 0;
#ifdef HAVE_V2D
            if (m->fam == GLMM_GAMMA_LOG) { /* row_ll's gamma case, two nodes at a time: the gradient at 5 x 5
                                          * nodes on 4,000 rows 1.2 -> 0.87 ms (measured) */
                const v2d_t yi = {y[i], y[i]}, wp = {w[i] * phi, w[i] * phi}, ph = {phi, phi};
                for (; k + 1 < K; k += 2) {
                    v2d_t eta = {eta0[i], eta0[i]}, vv, acc;
                    for (int a = 0; a < q; a++) { memcpy(&vv, vkT + a * K + k, sizeof vv); eta += ti[a] * vv; }
                    const v2d_t r = yi * exp_clamped2(-eta), sum = eta + r, d = ph * (r - one);
                    memcpy(d1i + k, &d, sizeof d);
                    memcpy(&acc, lk + k, sizeof acc); acc -= wp * sum; memcpy(lk + k, &acc, sizeof acc);
                    if (dp) { acc = -sum; memcpy(dp + (size_t)i * K + k, &acc, sizeof acc); }
                }
            }
#endif
            for (; k < K; k++) {
                double eta = eta0[i];
                for (int a = 0; a < q; a++) eta += ti[a] * vk[(size_t)k * q + a];
                lk[k] += w[i] * row_ll(m->fam, y[i], ntr[i], eta, phi, d1i + k, &d2, &dphi);
                if (dp) dp[(size_t)i * K + k] = dphi;
            }
        }
    }
    for (int k = 0; k < K; k++) lk[k] -= log(prod[k]);
}

/* One group's Laplace approximation h(vhat) - log|L| and its exact gradient, added to g_beta, g_lam and g_phi
 * (one node is too few for Fisher's identity: the derivative of log|H| matters). Write l1, l2, l3 for a row's
 * derivatives by eta. With H = I + sum w_i (-l2_i) t_i t_i', a_i = t_i' H^-1 t_i, e_i = w_i l3_i a_i / 2,
 * u = sum e_i t_i and lambda = H^-1 u (the adjoint of the mode's dependence on theta, by the implicit-function
 * theorem), a row contributes through its linear predictor A_i = w_i l1_i + e_i + w_i l2_i lambda't_i and through
 * t_i = Lam' z_i the vector B_i = w_i (l1_i lambda + l2_i H^-1 t_i):
 * dl/dbeta += A_i x_i, dl/dLam[a][b] += z_ia (A_i vhat_b + B_i[b]). */
static double laplace_group(const Glmm *m, int s, int n, const double *y, const double *ntr, const double *w,
                            const double *eta0, const double *t, double phi, const double *v, const double *L,
                            double h, double *store, double *g_beta, double *g_phi, double *g_lam) {
    const int p = m->p, q = m->q, width = 4 + q; /* per row: l1, w l1 + e, l2, l1_phi, H^-1 t_i */
    double u[q], lam[q], Hinv[q * q], dphi = 0.0, d1_phi = 0.0, d2_phi = 0.0;
    double logdet = 0.0;
    for (int a = 0; a < q; a++) { logdet += log(L[a * q + a]); u[a] = 0.0; }
    chol_inverse(L, q, Hinv);
    for (int i = 0; i < n; i++) { /* l1, l2 at the mode are in store (group_mode's last pass); now l3 and u */
        const double *ti = t + (size_t)i * q;
        double *st = store + (size_t)i * width, *Ht = st + 4;
        double d3;
        if (m->fam == GLMM_BINOMIAL_LOGIT) { /* l3 = l2 (1 - 2p), p from l1 = y - n p: no exp */
            d3 = ntr[i] > 0.0 ? st[2] * (1.0 - 2.0 * (y[i] - st[0]) / ntr[i]) : 0.0;
        } else if (m->fam == GLMM_POISSON_LOG) {
            d3 = st[2];
        } else {
            double eta = eta0[i];
            for (int a = 0; a < q; a++) eta += ti[a] * v[a];
            row_ll(m->fam, y[i], ntr[i], eta, phi, st, st + 2, &dphi);
            d3 = row_d3(m->fam, y[i], ntr[i], eta, phi, &d1_phi, &d2_phi);
        }
        double ai = 0.0;
        for (int a = 0; a < q; a++) {
            double u_a = 0.0;
            for (int b = 0; b < q; b++) u_a += Hinv[a * q + b] * ti[b];
            Ht[a] = u_a;
            ai += ti[a] * u_a;
        }
        double e = 0.5 * w[i] * d3 * ai;
        st[1] = w[i] * st[0] + e;
        st[3] = d1_phi;
        for (int a = 0; a < q; a++) u[a] += e * ti[a];
        if (m->P.n_dpar) *g_phi += w[i] * (dphi + 0.5 * d2_phi * ai);
    }
    chol_solve(L, q, u, lam);
    for (int i = 0; i < n; i++) {
        const double *ti = t + (size_t)i * q, *Wi = m->W + (size_t)(s + i) * p, *Zi = m->Z + (size_t)(s + i) * q;
        const double *st = store + (size_t)i * width, *Ht = st + 4;
        double lt = 0.0;
        for (int a = 0; a < q; a++) lt += lam[a] * ti[a];
        double A = st[1] + w[i] * st[2] * lt;
        for (int j = 0; j < p; j++) g_beta[j] += A * Wi[j];
        for (int a = 0; a < q; a++)
            for (int b = 0; b < q; b++)
                g_lam[a * q + b] += Zi[a] * (A * v[b] + w[i] * (st[0] * lam[b] + st[2] * Ht[b]));
        if (m->P.n_dpar) *g_phi += w[i] * st[3] * lt;
    }
    return h - logdet;
}

/* One group's integral by the nodes precomputed at the pilot's point (beta_hat, Lam_hat), for models whose
 * population-level columns lie, within each group, in the span of its group-level columns (W_g = Z_g A_g):
 * the rows then depend on theta = A_g beta + b only, theta ~ N(A_g beta, Lam Lam'), and the group's
 * log-likelihood l_g(theta) does not depend on the sampled parameters (no family parameter; gamma's shape phi
 * multiplies its eta part, l_g = phi S_g(theta) + terms in phi alone, so c_k leaves phi S_k out and each
 * evaluation adds it back: the nodes' weights then follow phi, their places do not). With the nodes
 * theta_k = A_g beta_hat + delta_k (delta_k = Lam_hat v_k, v_k AGQ's nodes at the pilot's point) and
 * c_k = log omega_k + |z_k|^2/2 + l_g(theta_k) + log|Lam_hat| - log|L| computed once (glmm_fixed_nodes),
 *   log p(y_g) = -log|Lam| + log sum_k exp(c_k - |u_k|^2/2),   u_k = Lam^-1 (delta_k + A_g (beta_hat - beta)),
 * the same Gauss-Hermite rule with its nodes held where the pilot put them: at the pilot's point it equals AGQ
 * exactly, elsewhere it stays a quadrature of the same integral whose error the pilot and the check measure.
 * No pass over the rows; the gradient is the value's exact derivative. With pi_k the nodes' weights, it adds
 * A_g' Lam^-T E[u] to g_beta and E[u u'] to *euu (the caller adds Lam^-T (sum E[u u'] - G I) to g_lam). */
/* fixed_group's nodes at (beta, Lam): u_k into uk (K x q) and the normalised weights pi_k into lk; returns
 * log sum_k exp(c_k - |u_k|^2/2), or NAN. Linv = Lam^-1 (lower triangular). */
static double fixed_weights(const Glmm *m, int g, const double *beta, const double *Linv, double phi, double *lk,
                            double *uk) {
    const int p = m->p, q = m->q, K = m->n_fixed;
    const double *A = m->A + (size_t)g * q * p, *delta = m->delta + (size_t)g * K * q, *c = m->fc + (size_t)g * K;
    const double *sk = m->fs ? m->fs + (size_t)g * K : NULL;
    double shift[q], s0[q], top = -INFINITY, sum = 0.0;
    for (int a = 0; a < q; a++) {
        shift[a] = 0.0;
        for (int j = 0; j < p; j++) shift[a] += A[a * p + j] * (m->beta_hat[j] - beta[j]);
    }
    for (int a = 0; a < q; a++) { /* Lam^-1 shift, once: then u_k = Lam^-1 delta_k + s0 */
        s0[a] = 0.0;
        for (int b = 0; b <= a; b++) s0[a] += Linv[a * q + b] * shift[b];
    }
    for (int k = 0; k < K; k++) {
        const double *d = delta + (size_t)k * q;
        double *u = uk + (size_t)k * q, r2 = 0.0;
        for (int a = 0; a < q; a++) {
            double v = s0[a];
            for (int b = 0; b <= a; b++) v += Linv[a * q + b] * d[b];
            u[a] = v;
            r2 += v * v;
        }
        lk[k] = c[k] - 0.5 * r2 + (sk ? phi * sk[k] : 0.0);
        if (lk[k] > top) top = lk[k];
    }
    if (!isfinite(top)) return NAN;
    for (int k = 0; k < K; k++) { lk[k] = exp(lk[k] - top); sum += lk[k]; }
    const double inv = 1.0 / sum;
    for (int k = 0; k < K; k++) lk[k] *= inv;
    return top + log(sum);
}

static double fixed_group(const Glmm *m, int g, const double *beta, const double *Linv, double phi, double *lk,
                          double *uk, double *g_beta, double *g_phi, double *euu) {
    const int p = m->p, q = m->q, K = m->n_fixed;
    const double *A = m->A + (size_t)g * q * p;
    double ubar[q];
    double value = fixed_weights(m, g, beta, Linv, phi, lk, uk);
    if (!isfinite(value)) return NAN;
    if (m->fs) { /* gamma: d/dphi of phi S_k under the nodes' weights, and the rows' terms in phi alone (row_ll_phi
                  * summed over the group from its two sums) */
        const double *sk = m->fs + (size_t)g * K;
        double d;
        for (int k = 0; k < K; k++) *g_phi += lk[k] * sk[k];
        value += gamma_phi_terms(phi, m->phi_sums[2 * g], m->phi_sums[2 * g + 1], &d);
        *g_phi += d;
    }
    for (int a = 0; a < q; a++) ubar[a] = 0.0;
    for (int k = 0; k < K; k++) {
        const double *u = uk + (size_t)k * q;
        for (int a = 0; a < q; a++) {
            ubar[a] += lk[k] * u[a];
            for (int b = 0; b <= a; b++) euu[a * q + b] += lk[k] * u[a] * u[b]; /* lower half; symmetric */
        }
    }
    for (int a = 0; a < q; a++) { /* A_g' Lam^-T ubar */
        double wv = 0.0;
        for (int b = a; b < q; b++) wv += Linv[b * q + a] * ubar[b];
        for (int j = 0; j < p; j++) g_beta[j] += A[a * p + j] * wv;
    }
    return value;
}

/* Lam^-1 (lower triangular, q x q) into Linv. */
static void lower_inverse(const double *Lam, int q, double *Linv) {
    for (int b = 0; b < q; b++)
        for (int a = 0; a < q; a++) {
            double v = a == b ? 1.0 : 0.0;
            for (int c = b; c < a; c++) v -= Lam[a * q + c] * Linv[c * q + b];
            Linv[a * q + b] = a < b ? 0.0 : v / Lam[a * q + a];
        }
}

/* log p(y | beta, phi, Lam) by adaptive quadrature, with the gradient (see above). NAN on failure. */
static double glmm_marginal(const Glmm *m, const double *beta, double phi, const double *Lam, double *g_beta,
                            double *g_phi, double *g_lam) {
    const int p = m->p, q = m->q, nd = m->P.n_dpar, KM = m->max_nodes;
    double total = 0.0;
    double L[q * q];
    for (int j = 0; j < p; j++) g_beta[j] = 0.0;
    for (int i = 0; i < q * q; i++) g_lam[i] = 0.0;
    *g_phi = 0.0;
    double euu[q * q], Linv[q * q];
    int n_fixed_groups = 0;
    for (int i = 0; i < q * q; i++) euu[i] = 0.0;
    if (m->n_fixed) lower_inverse(Lam, q, Linv);
    for (int g = 0; g < m->G; g++) {
        const int s = (int)m->starts[g], n = (int)m->starts[g + 1] - s, r = (int)m->rule[g];
        double *eta0 = tls.scratch, *t = eta0 + m->max_ng, *d1 = t + (size_t)m->max_ng * q;
        double *dp = d1 + (size_t)m->max_ng * KM, *lk = dp + (size_t)m->max_ng * KM * nd, *prod = lk + KM;
        double *vk = prod + KM;
        if (r >= 2) {
            double h = fixed_group(m, g, beta, Linv, phi, lk, vk, g_beta, g_phi, euu);
            if (!isfinite(h)) return NAN;
            total += h;
            n_fixed_groups++;
            continue;
        }
        const int K = m->n_nodes[r];  /* r is 0 or 1 here */
        double *v = tls.modes + (size_t)g * q;
        const double *y = m->y + s, *ntr = m->ntr + s, *w = m->w + s;
        group_rows(m, s, n, beta, Lam, eta0, t);
        double h;
        if (K > 1) { /* AGQ is exact for any centring, up to its quadrature error: a mode to 1e-5 is plenty */
            h = group_mode(m, n, y, ntr, w, eta0, t, phi, v, L, 1e-5, NULL, 0, NULL);
        } else if (m->fam == GLMM_BINOMIAL_LOGIT || m->fam == GLMM_POISSON_LOG) { /* the mode to 1e-5, polished */
            double pending[q];
            h = group_mode(m, n, y, ntr, w, eta0, t, phi, v, L, 1e-5, d1, 4 + q, pending);
            if (isfinite(h)) h = polish_mode(m, n, y, ntr, w, t, v, pending, h, L, d1, 4 + q);
        } else {
            h = group_mode(m, n, y, ntr, w, eta0, t, phi, v, L, 1e-11, d1, 4 + q, NULL);
        }
        if (!isfinite(h)) return NAN;
        if (K == 1) { /* Laplace, with its exact gradient */
            total += laplace_group(m, s, n, y, ntr, w, eta0, t, phi, v, L, h, d1, g_beta, g_phi, g_lam);
            if (nd)
                for (int i = 0; i < n; i++) {
                    double dphi_i;
                    total += w[i] * row_ll_phi(m->fam, y[i], phi, &dphi_i);
                    *g_phi += w[i] * dphi_i;
                }
            continue;
        }
        double logdet = 0.0, top = -INFINITY;
        for (int a = 0; a < q; a++) logdet += log(L[a * q + a]);
        for (int k = 0; k < K; k++) {
            double *vv = vk + (size_t)k * q;
            chol_back(L, q, m->nodes[r] + (size_t)k * q, vv);
            for (int a = 0; a < q; a++) vv[a] += v[a];
        }
        node_pass(m, n, y, ntr, w, eta0, t, phi, K, vk, lk, prod, d1, nd ? dp : NULL);
        for (int k = 0; k < K; k++) {
            lk[k] += m->logw[r][k];
            if (lk[k] > top) top = lk[k];
        }
        if (!isfinite(top)) return NAN;
        double sum = 0.0;
        for (int k = 0; k < K; k++) { lk[k] = exp(lk[k] - top); sum += lk[k]; }
        for (int k = 0; k < K; k++) lk[k] /= sum; /* the nodes' posterior weights */
        total += top + log(sum) - logdet;
        if (nd)
            for (int i = 0; i < n; i++) {
                double dphi_i;
                total += w[i] * row_ll_phi(m->fam, y[i], phi, &dphi_i);
                *g_phi += w[i] * dphi_i;
            }
        for (int i = 0; i < n; i++) {
            const double *Wi = m->W + (size_t)(s + i) * p, *Zi = m->Z + (size_t)(s + i) * q;
            double e = 0.0, ev[q];
            for (int b = 0; b < q; b++) ev[b] = 0.0;
            for (int k = 0; k < K; k++) {
                double c = lk[k] * d1[(size_t)i * K + k];
                e += c;
                for (int b = 0; b < q; b++) ev[b] += c * vk[(size_t)k * q + b];
                if (nd) *g_phi += w[i] * lk[k] * dp[(size_t)i * K + k];
            }
            for (int j = 0; j < p; j++) g_beta[j] += w[i] * e * Wi[j];
            for (int a = 0; a < q; a++)
                for (int b = 0; b < q; b++) g_lam[a * q + b] += w[i] * Zi[a] * ev[b];
        }
    }
    if (n_fixed_groups) { /* -G log|Lam|, and Lam^-T (sum E[u u'] - G I) into g_lam, column by column */
        for (int a = 0; a < q; a++) {
            total -= n_fixed_groups * log(Lam[a * q + a]);
            euu[a * q + a] -= n_fixed_groups;
            for (int b = a + 1; b < q; b++) euu[a * q + b] = euu[b * q + a];
        }
        for (int b = 0; b < q; b++)
            for (int a = q - 1; a >= 0; a--) {
                double s = euu[a * q + b];
                for (int c = a + 1; c < q; c++) s -= Lam[c * q + a] * euu[c * q + b];
                euu[a * q + b] = s / Lam[a * q + a];
                g_lam[a * q + b] += euu[a * q + b];
            }
    }
    return total;
}

/* The GLMM's log density at x; its gradient into grad. */
double glmm_log_density(const double *x, double *grad, const double *buf) {
    Glmm m;
    read_glmm(&m, buf);
    const Priors *P = &m.P;
    const int q = m.q, nb = m.p > 0 ? m.p : 1, nc = P->n_cor > 0 ? 2 * P->n_cor : 1;
    double vals[P->k], dxdz[P->k], g_beta[nb], cpc[nc], Lcorr[q * q], Lam[q * q], g_lam[q * q], g_phi;
    if (!tls_ready(&m, buf)) return NAN;
    double lp = prior_part(P, x, grad, vals, dxdz, Lcorr, cpc, Lam);
    double phi = P->n_dpar ? vals[m.p] : 0.0;
    double ll = glmm_marginal(&m, vals, phi, Lam, g_beta, &g_phi, g_lam);
    if (!isfinite(ll)) return -INFINITY;
    chain_back(P, vals, dxdz, Lcorr, cpc, g_beta, &g_phi, g_lam, grad);
    return lp + ll;
}

/* nutpie's callback for the GLMM densities: a value of -inf (no finite mode) is reported before the gradient. */
static int64_t glmm_callback(uint64_t dim, const double *x, double *out, double *logp, const double *buf,
                             LogDensity f) {
    if (dim != (uint64_t)buf[1]) return -1;
    double value = f(x, out, buf);
    *logp = value;
    if (!isfinite(value)) return 4;
    for (uint64_t i = 0; i < dim; i++)
        if (!isfinite(out[i])) return 3;
    return 0;
}

int64_t glmm_logp(uint64_t dim, const double *x, double *out, double *logp, const double *buf) {
    return glmm_callback(dim, x, out, logp, buf, glmm_log_density);
}

/* fixed_group's nodes at the point x (the pilot's posterior mode), for every group: delta (G x K x q), c (G x K)
 * and beta_hat (p); z and logw: K standard-normal Gauss-Hermite nodes and log(weight) + |z|^2/2. One Newton solve
 * and one pass over each group's rows at K nodes. Returns 0, or 1 where a group's mode could not be found. */
int64_t glmm_fixed_nodes(const double *buf, const double *x, int64_t K, const double *z, const double *logw,
                         double *delta, double *c, double *beta_hat, double *sk) {
    Glmm m;
    read_glmm(&m, buf);
    const Priors *P = &m.P;
    const int q = m.q, n_dim = (int)buf[1], nc = P->n_cor > 0 ? 2 * P->n_cor : 1;
    double vals[P->k], dxdz[P->k], cpc[nc], Lcorr[q * q], Lam[q * q], L[q * q], grad[n_dim];
    if (K > m.max_nodes) m.max_nodes = (int)K;
    if (!tls_ready(&m, buf)) return 1;
    prior_part(P, x, grad, vals, dxdz, Lcorr, cpc, Lam);
    for (int j = 0; j < m.p; j++) beta_hat[j] = vals[j];
    /* gamma: the nodes are placed for the shape at x, and l_g(theta_k) = phi S_k splits into c_k (without it)
     * and S_k (into sk), so that fixed_weights can scale S_k by each draw's shape */
    const double phi = sk && P->n_dpar ? vals[m.p] : 0.0;
    if (sk && !(phi > 0.0)) return 1;
    double logdet_lam = 0.0;
    for (int a = 0; a < q; a++) logdet_lam += log(Lam[a * q + a]);
    const int KM = m.max_nodes;
    for (int g = 0; g < m.G; g++) {
        const int s = (int)m.starts[g], n = (int)m.starts[g + 1] - s;
        double *eta0 = tls.scratch, *t = eta0 + m.max_ng, *d1 = t + (size_t)m.max_ng * q;
        double *lk = d1 + (size_t)m.max_ng * KM, *prod = lk + KM, *vk = prod + KM;
        double *v = tls.modes + (size_t)g * q;
        const double *y = m.y + s, *ntr = m.ntr + s, *w = m.w + s;
        group_rows(&m, s, n, vals, Lam, eta0, t);
        if (!isfinite(group_mode(&m, n, y, ntr, w, eta0, t, phi, v, L, 1e-10, NULL, 0, NULL))) return 1;
        double logdet_l = 0.0;
        for (int a = 0; a < q; a++) logdet_l += log(L[a * q + a]);
        for (int k = 0; k < K; k++) {
            double *vv = vk + (size_t)k * q;
            chol_back(L, q, z + (size_t)k * q, vv);
            for (int a = 0; a < q; a++) vv[a] += v[a];
        }
        node_pass(&m, n, y, ntr, w, eta0, t, phi, (int)K, vk, lk, prod, d1, NULL);
        for (int k = 0; k < K; k++) {
            const double *vv = vk + (size_t)k * q;
            double r2 = 0.0;
            for (int a = 0; a < q; a++) r2 += vv[a] * vv[a];
            /* node_pass's h_g includes -|v|^2/2, the prior in v; fixed_group evaluates the prior itself */
            const double l = lk[k] + 0.5 * r2; /* the rows' log-likelihood at the node */
            if (sk) sk[(size_t)g * K + k] = l / phi;
            c[(size_t)g * K + k] = logw[k] + (sk ? 0.0 : l) + logdet_lam - logdet_l;
            for (int a = 0; a < q; a++) {
                double d = 0.0;
                for (int b = 0; b <= a; b++) d += Lam[a * q + b] * vv[b];
                delta[((size_t)g * K + k) * q + a] = d;
            }
        }
    }
    return 0;
}

/* -- the random effects' exact conditional ------------------------------------------------------ */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double uniform(uint64_t *s) { return ((splitmix(s) >> 11) + 0.5) * 0x1.0p-53; } /* in (0, 1) */
static double std_normal(uint64_t *s) { return sqrt(-2.0 * log(uniform(s))) * cos(6.283185307179586 * uniform(s)); }

/* The mean and the Cholesky factor C of the covariance of v given y_g, by the group's precomputed nodes at (beta,
 * Lam) (v_k = u_k of fixed_weights); scratch holds K (1 + q) numbers. 0 where they fail (a covariance not
 * positive definite: all weight on one node, far from the pilot's point). */
static int fixed_moments(const Glmm *m, int g, const double *beta, const double *Linv, double phi, double *scratch,
                         double *mean, double *C) {
    const int q = m->q, K = m->n_fixed;
    double *lk = scratch, *uk = scratch + K;
    if (!isfinite(fixed_weights(m, g, beta, Linv, phi, lk, uk))) return 0;
    for (int a = 0; a < q; a++) {
        mean[a] = 0.0;
        for (int k = 0; k < K; k++) mean[a] += lk[k] * uk[(size_t)k * q + a];
    }
    for (int a = 0; a < q; a++)
        for (int b = 0; b <= a; b++) {
            double cv = 0.0;
            for (int k = 0; k < K; k++)
                cv += lk[k] * (uk[(size_t)k * q + a] - mean[a]) * (uk[(size_t)k * q + b] - mean[b]);
            C[a * q + b] = cv;
        }
    return cholesky_inplace(C, q) && isfinite(C[0]);
}

/* For each draw x[d] (rows of the unconstrained parameters), the random effects b_g = Lam v_g in
 * standardised units, into out[d][g][:]: v_g from an independence Metropolis chain of `steps` steps
 * started at its own proposal, the proposal a multivariate t with 4 degrees of freedom at the mode,
 * scaled by the inverse negative Hessian. The chain leaves the exact conditional p(v | y_g, theta)
 * invariant, and the ratio target / proposal is bounded (h_g <= h_g(vhat) - |v - vhat|^2 / 2, since the
 * prior makes h_g 1-strongly concave, while the t's tails are polynomial), so it is uniformly ergodic.
 * Groups of the large-group rule (close to normal, where the proposal is close to the target) take
 * steps_large steps, the others steps_small. accepted[d] counts accepted moves after the first. Returns 0, or
 * 1 where a mode could not be found. */
int64_t glmm_draw(const double *buf, const double *xs, int64_t n_draws, int64_t steps_small, int64_t steps_large,
                  uint64_t seed, double *out, double *accepted) {
    Glmm m;
    read_glmm(&m, buf);
    const Priors *P = &m.P;
    const int q = m.q, n_dim = (int)buf[1], nc = P->n_cor > 0 ? 2 * P->n_cor : 1;
    const double nu = 4.0;
    double vals[P->k], dxdz[P->k], cpc[nc], Lcorr[q * q], Lam[q * q], L[q * q], grad[n_dim], Linv[q * q];
    double z[q], v[q], cur[q], centre[q], C[q * q];
    if (!tls_ready(&m, buf)) return 1;
    /* glmm_marginal's scratch layout: the nodes' weights after the per-row arrays */
    const size_t lk_at = (size_t)m.max_ng * (1 + q + (size_t)m.max_nodes * (1 + P->n_dpar));
    for (int64_t d = 0; d < n_draws; d++) {
        uint64_t state = seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(d + 1));
        prior_part(P, xs + d * n_dim, grad, vals, dxdz, Lcorr, cpc, Lam);
        if (m.n_fixed) lower_inverse(Lam, q, Linv);
        double phi = P->n_dpar ? vals[m.p] : 0.0;
        accepted[d] = 0.0;
        for (int g = 0; g < m.G; g++) {
            const int s = (int)m.starts[g], n = (int)m.starts[g + 1] - s;
            double *eta0 = tls.scratch, *t = eta0 + m.max_ng, *mode = tls.modes + (size_t)g * q;
            const double *y = m.y + s, *ntr = m.ntr + s, *w = m.w + s;
            const int r = (int)m.rule[g];
            group_rows(&m, s, n, vals, Lam, eta0, t);
            /* the proposal's centre and scale: the precomputed nodes' moments of v where the group has them (no
             * Newton solve, no pass over the rows), else the mode and the inverse negative Hessian there */
            int by_nodes = r >= 2 && fixed_moments(&m, g, vals, Linv, phi, tls.scratch + lk_at, centre, C);
            if (!by_nodes) {
                if (!isfinite(group_mode(&m, n, y, ntr, w, eta0, t, phi, mode, L, 1e-5, NULL, 0, NULL))) return 1;
                for (int a = 0; a < q; a++) centre[a] = mode[a];
            }
            double cur_lr = 0.0;
            const int64_t steps = r % 2 ? steps_large : steps_small;
            for (int64_t step = 0; step < steps; step++) {
                double chi = -2.0 * log(uniform(&state) * uniform(&state)), r2 = 0.0; /* chi-square(4) */
                for (int a = 0; a < q; a++) { z[a] = std_normal(&state) * sqrt(nu / chi); r2 += z[a] * z[a]; }
                if (by_nodes)
                    for (int a = 0; a < q; a++) {
                        v[a] = 0.0;
                        for (int b = 0; b <= a; b++) v[a] += C[a * q + b] * z[b];
                    }
                else
                    chol_back(L, q, z, v);
                for (int a = 0; a < q; a++) v[a] += centre[a];
                double lr = group_h(&m, n, y, ntr, w, eta0, t, phi, v, NULL, NULL, NULL, 0) +
                            0.5 * (nu + q) * log1p(r2 / nu);
                if (step == 0 || (isfinite(lr) && log(uniform(&state)) < lr - cur_lr)) {
                    for (int a = 0; a < q; a++) cur[a] = v[a];
                    if (step > 0) accepted[d] += 1.0;
                    cur_lr = lr;
                }
            }
            for (int b = 0; b < q; b++) {
                double r = 0.0;
                for (int a = 0; a < q; a++) r += Lam[b * q + a] * cur[a];
                out[((size_t)d * m.G + g) * q + b] = r;
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * GLMMs with two nested factors (glmm.py's NestedGlmmKernel documents the buffer): one term per factor, the outer
 * level's effect u_h and its inner levels' effects v_c, standardised (b = sd u), all integrated out. Given u_h the
 * inner levels are independent, so the outer level's integral is a nested one,
 *   p(y_h) = int N(u) prod_c J_c(u) du,   J_c(u) = int N(v) prod_{i in c} p(y_i | eta0_i + ta_i u + tb_i v) dv,
 * (ta_i = za_i sd_a, tb_i = zb_i sd_b), each by adaptive Gauss-Hermite quadrature: the outer rule (Ka nodes)
 * around the joint mode's u with the scale of its Laplace marginal (the Schur complement S of the arrow-shaped
 * negative Hessian), the inner rule (Kb nodes) around each inner level's mode given the outer node (Newton from
 * the joint mode's linear prediction). AGQ is exact for any centring and scale up to its quadrature error, which
 * the pilot and the check after sampling measure (K against 2K). The gradient is the nested quadrature of
 * Fisher's identity, as for one factor: per row, E[dl/deta] and its products with u and v under the nodes'
 * posterior weights. A pass over an outer level's rows costs Ka (Kb + the inner Newton steps) row evaluations.
 * --------------------------------------------------------------------------------------------- */
#define NGHEADER 19 /* total, n_dim, n_beta, Q, outer levels, n_cor, N, n_dpar, family, Ka, Kb, max rows per outer
                       level, max inner levels per outer level, outer sds' offset, inner sds' offset, inner levels,
                       1 where every row is bernoulli-logit of unit weight (logit_unit_nodes and the vector passes),
                       the outer factor's terms qa, the inner factor's qb */

typedef struct {
    Priors P;
    /* Ka, Kb: nodes per dimension of the outer and inner rules; nA = Ka^qa and nB = Kb^qb nodes in all */
    int p, Q, Ga, Gb, N, fam, Ka, Kb, max_rows, max_inner, off_a, off_b, unit, qa, qb, nA, nB;
    const double *za_nodes, *za_logw, *zb_nodes, *zb_logw, *outer, *inner, *W, *Za, *Zb, *y, *ntr, *off, *w;
} NGlmm;

static void read_nglmm(NGlmm *m, const double *buf) {
    m->p = (int)buf[2]; m->Q = (int)buf[3]; m->Ga = (int)buf[4]; m->N = (int)buf[6]; m->fam = (int)buf[8];
    m->Ka = (int)buf[9]; m->Kb = (int)buf[10]; m->max_rows = (int)buf[11]; m->max_inner = (int)buf[12];
    m->off_a = (int)buf[13]; m->off_b = (int)buf[14]; m->Gb = (int)buf[15]; m->unit = (int)buf[16];
    m->qa = (int)buf[17]; m->qb = (int)buf[18];
    m->nA = 1; m->nB = 1;
    for (int a = 0; a < m->qa; a++) m->nA *= m->Ka;
    for (int b = 0; b < m->qb; b++) m->nB *= m->Kb;
    const double *o = read_priors(&m->P, buf + NGHEADER, m->p, (int)buf[7], m->Q, (int)buf[5]);
    m->za_nodes = o; o += (size_t)m->nA * m->qa;
    m->za_logw = o; o += m->nA;
    m->zb_nodes = o; o += (size_t)m->nB * m->qb;
    m->zb_logw = o; o += m->nB;
    m->outer = o; o += m->Ga + 1; /* each outer level's first inner level */
    m->inner = o; o += m->Gb + 1; /* each inner level's first row */
    m->W = o; o += (size_t)m->N * m->p;
    m->Za = o; o += (size_t)m->N * m->qa;
    m->Zb = o; o += (size_t)m->N * m->qb;
    m->y = o; o += m->N;
    m->ntr = o; o += m->N;
    m->off = o; o += m->N;
    m->w = o;
}

/* Per-thread memory of the nested kernel: warm starts (u per outer level, v per inner level) and scratch. */
static _Thread_local Tls ntls;

/* Scratch per outer level: 4 per row (eta0, ta, tb, base), 3 Ka per row (the inner rules' E[l1], E[l1 v],
 * E[dl/dphi] per outer node), 2 Kb per row (l1, dl/dphi per inner node), 12 per inner level, 2 Ka + 3 Kb. */
static size_t vn_scratch(const NGlmm *m);

static int ntls_ready(const NGlmm *m, const double *buf) {
    size_t n_modes = (size_t)m->Ga * m->qa + (size_t)m->Gb * m->qb;
    size_t need = m->qa == 1 && m->qb == 1
                ? (size_t)m->max_rows * (4 + 3 * (size_t)m->Ka + 2 * (size_t)m->Kb) + 12 * (size_t)m->max_inner
                  + 2 * (size_t)m->Ka + 3 * (size_t)m->Kb + 8
                : vn_scratch(m);
    if (ntls.owner != buf || ntls.n_modes != n_modes) {
        free(ntls.modes);
        ntls.modes = calloc(n_modes > 0 ? n_modes : 1, sizeof(double));
        ntls.owner = buf; ntls.n_modes = n_modes;
    }
    if (ntls.cap < need) {
        free(ntls.scratch);
        ntls.scratch = malloc(need * sizeof(double));
        ntls.cap = ntls.scratch ? need : 0;
    }
    return ntls.modes != NULL && ntls.scratch != NULL;
}

/* nested_F's sums over rows r0 .. r1 - 1 of one inner level (bernoulli-logit rows of unit weight), two at a time
 * where the compiler has vectors: sums[0] the log-likelihood, and with deriv its derivatives by v and u and the
 * negative Hessian's entries (sums[1 .. 5]: dv, du, H_uv, H_vv, H_uu, without the prior's parts). Returns the first
 * row it left for the scalar loop. */
WIDE_CLONES static int logit_unit_rows(int r0, int r1, const double *y, const double *eta0, const double *ta, const double *tb,
                           double u, double vc, int deriv, double *sums) {
    for (int k = 0; k < 6; k++) sums[k] = 0.0;
    int i = r0;
#ifdef HAVE_V2D
    const v2d_t zero = {0.0, 0.0}, one = {1.0, 1.0};
    const v2l_t sign = {(long long)0x8000000000000000ULL, (long long)0x8000000000000000ULL};
    v2d_t sf = zero, sg = zero, sgu = zero, shv = zero, sdv = zero, shuu = zero, prod = one, e0, a, b, yy;
    for (; i + 1 < r1; i += 2) {
        memcpy(&e0, eta0 + i, sizeof e0); memcpy(&a, ta + i, sizeof a); memcpy(&b, tb + i, sizeof b);
        memcpy(&yy, y + i, sizeof yy);
        const v2d_t eta = e0 + a * u + b * vc, e = exp_nonpositive2((v2d_t)((v2l_t)eta | sign)), ope = one + e;
        const v2l_t pos = eta >= zero;
        sf += yy * eta - select2(pos, eta, zero);
        prod *= ope;
        if (((i - r0) & 127) == 126) { sums[0] -= log(prod[0] * prod[1]); prod = one; }
        if (deriv) {
            const v2d_t inv = one / ope, d1 = yy - select2(pos, inv, e * inv), cv = e * inv * inv;
            sg += d1 * b; sgu += d1 * a; shv += cv * a * b; sdv += cv * b * b; shuu += cv * a * a;
        }
    }
    sums[0] += sf[0] + sf[1] - log(prod[0] * prod[1]);
    sums[1] = sg[0] + sg[1]; sums[2] = sgu[0] + sgu[1]; sums[3] = shv[0] + shv[1]; sums[4] = sdv[0] + sdv[1];
    sums[5] = shuu[0] + shuu[1];
#else
    (void)y; (void)eta0; (void)ta; (void)tb; (void)u; (void)vc; (void)deriv;
#endif
    return i;
}

/* F(u, v) = -u^2/2 + sum_c f_c, f_c = -v_c^2/2 + sum_{i in c} w_i l_i, over one outer level's rows (s: its first
 * row; inner levels c0 .. c1 - 1); each f_c into fc if given. With d: dF/du and the negative Hessian's H_uu in d[0]
 * and d[1], then per inner level lc at d[2 + 3 lc]: dF/dv_c, H_uc and H_cc. */
static double nested_F(const NGlmm *m, int s, int c0, int c1, const double *eta0, const double *ta,
                       const double *tb, double phi, double u, const double *v, double *fc, double *d) {
    double F = -0.5 * u * u, d1, d2, dphi;
    double gu = -u, huu = 1.0;
    for (int c = c0; c < c1; c++) {
        const int lc = c - c0, r0 = (int)m->inner[c] - s, r1 = (int)m->inner[c + 1] - s;
        const double vc = v[lc];
        double f = -0.5 * vc * vc, g = -vc, hv = 0.0, dv = 1.0;
        int i = r0;
        if (m->unit) { /* bernoulli-logit rows of unit weight: two at a time (logit_pair) */
            double sums[6];
            i = logit_unit_rows(r0, r1, m->y + s, eta0, ta, tb, u, vc, d != NULL, sums);
            f += sums[0]; g += sums[1]; gu += sums[2]; hv += sums[3]; dv += sums[4]; huu += sums[5];
        }
        for (; i < r1; i++) {
            const double wi = m->w[s + i];
            const double l = row_ll(m->fam, m->y[s + i], m->ntr[s + i], eta0[i] + ta[i] * u + tb[i] * vc, phi,
                                    &d1, &d2, &dphi);
            f += wi * l;
            if (d) {
                g += wi * d1 * tb[i]; gu += wi * d1 * ta[i];
                hv -= wi * d2 * ta[i] * tb[i]; dv -= wi * d2 * tb[i] * tb[i]; huu -= wi * d2 * ta[i] * ta[i];
            }
        }
        F += f;
        if (fc) fc[lc] = f;
        if (d) { d[2 + 3 * lc] = g; d[3 + 3 * lc] = hv; d[4 + 3 * lc] = dv; }
    }
    if (d) { d[0] = gu; d[1] = huu; }
    return F;
}

/* The joint mode of F over (u, v) by Newton's method with step halving (F is strictly concave for these
 * log-concave families), from the warm start (u, v), else from 0, to a step below tol. The negative Hessian is
 * an arrow: the Newton step is S du = gu - sum_c hv_c gv_c / dv_c with the Schur complement S = huu -
 * sum_c hv_c^2 / dv_c, then dv_c = (gv_c - hv_c du) / dv_c. Returns F at the mode, its S and derivatives in d
 * (nested_F's layout), or NAN. dt: scratch of the same size as d, vt: of nc. */
static double nested_newton(const NGlmm *m, int s, int c0, int c1, const double *eta0, const double *ta,
                            const double *tb, double phi, double *u, double *v, double tol, double *S, double *d,
                            double *dt, double *vt) {
    const int nc = c1 - c0;
    double F = nested_F(m, s, c0, c1, eta0, ta, tb, phi, *u, v, NULL, d);
    if (!isfinite(F)) {
        *u = 0.0;
        for (int c = 0; c < nc; c++) v[c] = 0.0;
        F = nested_F(m, s, c0, c1, eta0, ta, tb, phi, *u, v, NULL, d);
    }
    for (int it = 0; it < 200 && isfinite(F); it++) {
        double Sc = d[1], r = d[0];
        for (int c = 0; c < nc; c++) {
            const double hv = d[3 + 3 * c], dv = d[4 + 3 * c];
            Sc -= hv * hv / dv; r -= hv * d[2 + 3 * c] / dv;
        }
        if (!(Sc > 0.0)) return NAN;
        const double du = r / Sc;
        double size = fabs(du), dec = du * d[0];
        for (int c = 0; c < nc; c++) {
            const double step = (d[2 + 3 * c] - d[3 + 3 * c] * du) / d[4 + 3 * c];
            size = fmax(size, fabs(step)); dec += step * d[2 + 3 * c];
        }
        if (size < tol || dec <= 1e-20 * (1.0 + fabs(F))) { *S = Sc; return F; }
        double scale = 1.0, Ft = -INFINITY, ut = *u;
        for (int half = 0; half < 60; half++, scale *= 0.5) {
            ut = *u + scale * du;
            for (int c = 0; c < nc; c++) vt[c] = v[c] + scale * (d[2 + 3 * c] - d[3 + 3 * c] * du) / d[4 + 3 * c];
            Ft = nested_F(m, s, c0, c1, eta0, ta, tb, phi, ut, vt, NULL, dt);
            if (isfinite(Ft) && Ft >= F - 1e-12 * fabs(F)) break;
        }
        if (!isfinite(Ft)) return NAN;
        *u = ut;
        for (int c = 0; c < nc; c++) v[c] = vt[c];
        for (int i = 0; i < 2 + 3 * nc; i++) d[i] = dt[i];
        F = Ft;
    }
    return NAN;
}

/* One Newton step for f(v) = -v^2/2 + sum_i w_i l_i(base_i + tb_i v) over one inner level's n rows, from v (in
 * place), and the negative second derivative D at the starting point (the inner rule's scale). A fixed number of
 * steps keeps the rule a smooth function of the parameters; from the joint mode's linear prediction one step
 * centres it to second order. Returns 0 where f is not finite there. */
WIDE_CLONES static int inner_step(const NGlmm *m, int n, const double *y, const double *ntr, const double *w,
                      const double *base, const double *tb, double phi, double *v, double *D) {
    double g = -*v, h = 1.0, d1, d2, dphi;
    int i = 0;
#ifdef HAVE_V2D
    if (m->unit) { /* bernoulli-logit rows of unit weight, two at a time: the derivatives alone */
        const v2d_t zero = {0.0, 0.0}, one = {1.0, 1.0};
        const v2l_t sign = {(long long)0x8000000000000000ULL, (long long)0x8000000000000000ULL};
        v2d_t sg = zero, sh = zero, b, t, yy;
        for (; i + 1 < n; i += 2) {
            memcpy(&b, base + i, sizeof b); memcpy(&t, tb + i, sizeof t); memcpy(&yy, y + i, sizeof yy);
            const v2d_t eta = b + t * *v, e = exp_nonpositive2((v2d_t)((v2l_t)eta | sign)), inv = one / (one + e);
            sg += (yy - select2(eta >= zero, inv, e * inv)) * t;
            sh += e * inv * inv * t * t; /* p (1 - p) = e / (1 + e)^2 on both sides of 0 */
        }
        g += sg[0] + sg[1]; h += sh[0] + sh[1];
    }
#endif
    for (; i < n; i++) {
        const double eta = base[i] + tb[i] * *v;
        if (m->fam == GLMM_BINOMIAL_LOGIT) { /* the derivatives alone: no log1p */
            const double e = exp(-fabs(eta)), inv = 1.0 / (1.0 + e), p = eta >= 0.0 ? inv : e * inv;
            d1 = y[i] - ntr[i] * p; d2 = -ntr[i] * p * (1.0 - p);
        } else {
            row_ll(m->fam, y[i], ntr[i], eta, phi, &d1, &d2, &dphi);
        }
        g += w[i] * d1 * tb[i]; h -= w[i] * d2 * tb[i] * tb[i];
    }
    if (!isfinite(g) || !(h > 0.0) || !isfinite(h)) return 0;
    *v += g / h;
    *D = h;
    return 1;
}

static double log_sum_exp_normalise(double *a, int K) { /* log sum exp(a), and a := softmax(a) */
    double top = -INFINITY, sum = 0.0;
    for (int k = 0; k < K; k++) if (a[k] > top) top = a[k];
    if (!isfinite(top)) return NAN;
    for (int k = 0; k < K; k++) { a[k] = exp(a[k] - top); sum += a[k]; }
    const double inv = 1.0 / sum;
    for (int k = 0; k < K; k++) a[k] *= inv;
    return top + log(sum);
}

/* The inner rule's Kb nodes v_j = vc + sv z_j: returns log sum_j exp(f_j), f_j = log w_j + z_j^2/2 - v_j^2/2 +
 * sum_i w_i l_i(v_j), and leaves the normalised weights in fj, v_j in vj, each row's dl/deta (and dl/dphi, if dp)
 * in d1[i Kb + j]. Bernoulli-logit rows of unit weight take all nodes at once (logit_unit_nodes); elsewhere the
 * logit link with unit weight and trials multiplies 1 + e^-|eta| over blocks of rows and takes one log per block
 * (node_pass's trick). NAN where no node's value is finite. */
static double inner_nodes(const NGlmm *m, int n, const double *y, const double *ntr, const double *w,
                          const double *base, const double *tb, double phi, double vc, double sv, double *fj,
                          double *vj, double *pj, double *d1, double *dp) {
    const int Kb = m->Kb;
    double d2, dphi = 0.0;
    if (m->unit) {
        for (int j = 0; j < Kb; j++) {
            vj[j] = vc + sv * m->zb_nodes[j];
            fj[j] = m->zb_logw[j] - 0.5 * vj[j] * vj[j];
        }
        logit_unit_nodes(n, y, base, tb, Kb, vj, fj, pj, d1);
        return logit_unit_weights(fj, pj, Kb);
    }
    for (int j = 0; j < Kb; j++) {
        const double vv = vc + sv * m->zb_nodes[j];
        double f = m->zb_logw[j] - 0.5 * vv * vv;
        if (m->fam == GLMM_BINOMIAL_LOGIT) {
            double prod = 1.0;
            for (int i = 0; i < n; i++) {
                const double eta = base[i] + tb[i] * vv, e = exp(-fabs(eta)), inv = 1.0 / (1.0 + e);
                const double c = w[i] * ntr[i];
                d1[(size_t)i * Kb + j] = y[i] - ntr[i] * (eta >= 0.0 ? inv : e * inv);
                f += w[i] * y[i] * eta - c * fmax(eta, 0.0);
                if (c == 1.0) prod *= 1.0 + e; /* in [1, 2]: 64 factors cannot overflow */
                else f -= c * log1p(e);
                if ((i & 63) == 63) { f -= log(prod); prod = 1.0; }
            }
            f -= log(prod);
        } else {
            for (int i = 0; i < n; i++) {
                f += w[i] * row_ll(m->fam, y[i], ntr[i], base[i] + tb[i] * vv, phi, d1 + (size_t)i * Kb + j, &d2,
                                   &dphi);
                if (dp) dp[(size_t)i * Kb + j] = dphi;
            }
        }
        vj[j] = vv; fj[j] = f;
    }
    return log_sum_exp_normalise(fj, Kb);
}


/* ---------------------------------------------------------------------------------------------
 * Two nested factors with several terms (qa outer, qb inner, not both 1): the Laplace approximation of each outer
 * level's integral over its effect u (qa) and its inner levels' v_c (qb each) jointly, standardised (b = Lam u),
 *   F(u, v) = -|u|^2/2 - sum_c |v_c|^2/2 + sum_i w_i l_i(eta0_i + ta_i'u + tb_i'v_c),  ta_i = Lam_a' za_i,
 *   log p(y_h) ~ F(uhat, vhat) - log|H|/2,
 * with the exact gradient (implicit-function theorem, laplace_group's formulas for the stacked rows T_i, which
 * hold ta_i at u's place and tb_i at v_c's). A tensor rule would cost Ka^qa Kb^qb row evaluations per row; the
 * negative Hessian H is an arrow, so Newton's method and every solve with H cost O(rows + levels q^3):
 *   H_uu = I + sum_i c_i ta_i ta_i',  H_uc = sum_{i in c} c_i ta_i tb_i',  D_c = H_cc = I + sum_{i in c} c_i tb_i tb_i'
 * (c_i = -w_i l2_i), M_c = D_c^-1 H_uc', S = H_uu - sum_c H_uc M_c (the Schur complement), |H| = |S| prod_c |D_c|;
 * H x = r by x_u = S^-1 (r_u - sum_c M_c' r_c), x_c = D_c^-1 r_c - M_c x_u. The nested adaptive quadrature of
 * the same integral (Ka^qa outer nodes around uhat scaled by S, Kb^qb inner nodes per level around one Newton
 * step from vhat_c - M_c (u - uhat)) gives the value alone: the accuracy check's reference (3 nodes per dimension
 * and level), whose cost per evaluation is Ka^qa (Kb^qb + 1) passes over the rows.
 * Layouts per outer level of nc inner levels: the derivatives blk = [g_u (qa), H_uu (qa^2), then per inner level
 * g_c (qb), H_uc (qa x qb), H_cc (qb^2)]; the factor fac = [chol S (qa^2), then per inner level chol D_c (qb^2),
 * M_c (qb x qa)]; vectors over all effects [u, v_0, v_1, ...]. Rows store l1, l2, e_i, dl1/dphi and H^-1 T_i's
 * parts at u (qa) and at v_c (qb): VN_SW each.
 * --------------------------------------------------------------------------------------------- */
#define VN_PC(qa, qb) ((qb) + (qa) * (qb) + (qb) * (qb))
#define VN_FC(qa, qb) ((qb) * (qb) + (qb) * (qa))
#define VN_SW(qa, qb) (4 + (qa) + (qb))

static size_t vn_scratch(const NGlmm *m) {
    const size_t qa = m->qa, qb = m->qb, R = m->max_rows, C = m->max_inner;
    const size_t BS = qa + qa * qa + C * VN_PC(qa, qb), FS = qa * qa + C * VN_FC(qa, qb), D = qa + C * qb;
    return R * (8 + 2 * qa + 2 * qb) + 2 * BS + FS + 6 * D + qa * qa + C * qb * qb + 3 * C + m->nA + m->nB + 64;
}

/* One outer level's rows: eta0 without the effects, TA = Lam_a' za_i (qa per row) and TB = Lam_b' zb_i (qb; with one
 * term each, za sd_a and zb sd_b: the scalar nested rule's rows too). */
static void vn_rows(const NGlmm *m, int s, int n, const double *beta, const double *Lam, double *eta0, double *TA,
                    double *TB) {
    const int qa = m->qa, qb = m->qb, oa = m->off_a, ob = m->off_b, Q = m->Q;
    for (int i = 0; i < n; i++) {
        const double *Wi = m->W + (size_t)(s + i) * m->p;
        const double *za = m->Za + (size_t)(s + i) * qa, *zb = m->Zb + (size_t)(s + i) * qb;
        double e = m->off[s + i];
        for (int j = 0; j < m->p; j++) e += Wi[j] * beta[j];
        eta0[i] = e;
        for (int b = 0; b < qa; b++) {
            double t = 0.0;
            for (int a = b; a < qa; a++) t += za[a] * Lam[(oa + a) * Q + oa + b];
            TA[(size_t)i * qa + b] = t;
        }
        for (int b = 0; b < qb; b++) {
            double t = 0.0;
            for (int a = b; a < qb; a++) t += zb[a] * Lam[(ob + a) * Q + ob + b];
            TB[(size_t)i * qb + b] = t;
        }
    }
}

static inline double dot(const double *a, const double *b, int q) {
    double s = 0.0;
    for (int k = 0; k < q; k++) s += a[k] * b[k];
    return s;
}

/* F at (u, v) over one outer level (first row s, inner levels c0 .. c1 - 1); each inner level's part
 * -|v_c|^2/2 + sum_i w_i l_i into fc if given; with blk the derivatives (layout above), with store each row's
 * l1 and l2 (rows relative to s). */
static double vn_F(const NGlmm *m, int s, int c0, int c1, const double *eta0, const double *TA, const double *TB,
                   double phi, const double *u, const double *v, double *fc, double *blk, double *store) {
    const int qa = m->qa, qb = m->qb, PC = VN_PC(qa, qb);
    double F = -0.5 * dot(u, u, qa), d1, d2, dphi;
    double *gu = blk, *Huu = blk ? blk + qa : NULL;
    if (blk)
        for (int a = 0; a < qa; a++) {
            gu[a] = -u[a];
            for (int b = 0; b < qa; b++) Huu[a * qa + b] = a == b ? 1.0 : 0.0;
        }
    for (int c = c0; c < c1; c++) {
        const int lc = c - c0, r0 = (int)m->inner[c] - s, r1 = (int)m->inner[c + 1] - s;
        const double *vc = v + (size_t)lc * qb;
        double f = -0.5 * dot(vc, vc, qb), *gv = NULL, *Huc = NULL, *Hcc = NULL;
        if (blk) {
            gv = blk + qa + qa * qa + (size_t)lc * PC; Huc = gv + qb; Hcc = Huc + qa * qb;
            for (int b = 0; b < qb; b++) {
                gv[b] = -vc[b];
                for (int b2 = 0; b2 < qb; b2++) Hcc[b * qb + b2] = b == b2 ? 1.0 : 0.0;
            }
            for (int k = 0; k < qa * qb; k++) Huc[k] = 0.0;
        }
        for (int i = r0; i < r1; i++) {
            const double *ta = TA + (size_t)i * qa, *tb = TB + (size_t)i * qb, wi = m->w[s + i];
            const double eta = eta0[i] + dot(ta, u, qa) + dot(tb, vc, qb);
            f += wi * row_ll(m->fam, m->y[s + i], m->ntr[s + i], eta, phi, &d1, &d2, &dphi);
            if (store) { store[VN_SW(qa, qb) * (size_t)i] = d1; store[VN_SW(qa, qb) * (size_t)i + 1] = d2; }
            if (blk) {
                const double g = wi * d1, h = -wi * d2;
                for (int a = 0; a < qa; a++) {
                    gu[a] += g * ta[a];
                    for (int b = 0; b <= a; b++) Huu[a * qa + b] += h * ta[a] * ta[b];
                    for (int b = 0; b < qb; b++) Huc[a * qb + b] += h * ta[a] * tb[b];
                }
                for (int b = 0; b < qb; b++) {
                    gv[b] += g * tb[b];
                    for (int b2 = 0; b2 <= b; b2++) Hcc[b * qb + b2] += h * tb[b] * tb[b2];
                }
            }
        }
        if (blk)
            for (int b = 0; b < qb; b++)
                for (int b2 = b + 1; b2 < qb; b2++) Hcc[b * qb + b2] = Hcc[b2 * qb + b];
        if (fc) fc[lc] = f;
        F += f;
    }
    if (blk)
        for (int a = 0; a < qa; a++)
            for (int b = a + 1; b < qa; b++) Huu[a * qa + b] = Huu[b * qa + a];
    return F;
}

/* The arrow's factor (layout above) from the derivatives blk; returns log|H|/2, or NAN where H is not positive
 * definite. */
static double vn_factor(const NGlmm *m, int nc, const double *blk, double *fac) {
    const int qa = m->qa, qb = m->qb, PC = VN_PC(qa, qb), FC = VN_FC(qa, qb);
    double *S = fac, half = 0.0, col[qb], x[qb];
    for (int k = 0; k < qa * qa; k++) S[k] = blk[qa + k];
    for (int c = 0; c < nc; c++) {
        const double *Huc = blk + qa + qa * qa + (size_t)c * PC + qb, *Hcc = Huc + qa * qb;
        double *D = fac + qa * qa + (size_t)c * FC, *M = D + qb * qb;
        for (int k = 0; k < qb * qb; k++) D[k] = Hcc[k];
        if (!cholesky_inplace(D, qb)) return NAN;
        for (int b = 0; b < qb; b++) half += log(D[b * qb + b]);
        for (int a = 0; a < qa; a++) { /* column a of M = D^-1 (row a of H_uc) */
            for (int b = 0; b < qb; b++) col[b] = Huc[a * qb + b];
            chol_solve(D, qb, col, x);
            for (int b = 0; b < qb; b++) M[b * qa + a] = x[b];
        }
        for (int a = 0; a < qa; a++)
            for (int a2 = 0; a2 <= a; a2++) {
                double t = 0.0;
                for (int b = 0; b < qb; b++) t += Huc[a * qb + b] * M[b * qa + a2];
                S[a * qa + a2] -= t;
            }
    }
    if (!cholesky_inplace(S, qa)) return NAN;
    for (int a = 0; a < qa; a++) half += log(S[a * qa + a]);
    return half;
}

/* H x = r with the arrow's factor (x and r over all effects; they may not overlap). */
static void vn_solve(const NGlmm *m, int nc, const double *fac, const double *r, double *x) {
    const int qa = m->qa, qb = m->qb, FC = VN_FC(qa, qb);
    double t[qa], y[qb];
    for (int a = 0; a < qa; a++) t[a] = r[a];
    for (int c = 0; c < nc; c++) {
        const double *M = fac + qa * qa + (size_t)c * FC + qb * qb, *rc = r + qa + (size_t)c * qb;
        for (int a = 0; a < qa; a++)
            for (int b = 0; b < qb; b++) t[a] -= M[b * qa + a] * rc[b];
    }
    chol_solve(fac, qa, t, x);
    for (int c = 0; c < nc; c++) {
        const double *D = fac + qa * qa + (size_t)c * FC, *M = D + qb * qb, *rc = r + qa + (size_t)c * qb;
        double *xc = x + qa + (size_t)c * qb;
        chol_solve(D, qb, rc, y);
        for (int b = 0; b < qb; b++) xc[b] = y[b] - dot(M + (size_t)b * qa, x, qa);
    }
}

/* The gradient in blk as a vector over all effects. */
static void vn_gradient(const NGlmm *m, int nc, const double *blk, double *g) {
    const int qa = m->qa, qb = m->qb, PC = VN_PC(qa, qb);
    for (int a = 0; a < qa; a++) g[a] = blk[a];
    for (int c = 0; c < nc; c++)
        for (int b = 0; b < qb; b++) g[qa + (size_t)c * qb + b] = blk[qa + qa * qa + (size_t)c * PC + b];
}

/* The joint mode of F from the warm start (u, v contiguous: u, then v; updated in place) by Newton's method with
 * step halving (F is strictly concave for these log-concave families), to a last step below tol. Returns F there,
 * leaving its derivatives in blk, the arrow's factor in fac, log|H|/2 in *half and (with store) each row's l1 and
 * l2; NAN where it failed. w: scratch of 3 vectors over all effects and one blk. */
static double vn_newton_from(const NGlmm *m, int s, int c0, int c1, const double *eta0, const double *TA,
                        const double *TB, double phi, double *uv, double tol, double *blk, double *fac, double *half,
                        double *store, double *w) {
    const int qa = m->qa, qb = m->qb, nc = c1 - c0, d = qa + nc * qb, BS = qa + qa * qa + nc * VN_PC(qa, qb);
    double *g = w, *step = g + d, *trial = step + d, *blk_t = trial + d;
    double F = vn_F(m, s, c0, c1, eta0, TA, TB, phi, uv, uv + qa, NULL, blk, store);
    if (!isfinite(F)) {
        for (int k = 0; k < d; k++) uv[k] = 0.0;
        F = vn_F(m, s, c0, c1, eta0, TA, TB, phi, uv, uv + qa, NULL, blk, store);
    }
    for (int it = 0; it < 200 && isfinite(F); it++) {
        *half = vn_factor(m, nc, blk, fac);
        if (!isfinite(*half)) return NAN;
        vn_gradient(m, nc, blk, g);
        vn_solve(m, nc, fac, g, step);
        double size = 0.0, dec = 0.0;
        for (int k = 0; k < d; k++) { size = fmax(size, fabs(step[k])); dec += step[k] * g[k]; }
        if (size < tol || dec <= 1e-20 * (1.0 + fabs(F))) return F;
        double scale = 1.0, Ft = -INFINITY;
        for (int h = 0; h < 60; h++, scale *= 0.5) {
            for (int k = 0; k < d; k++) trial[k] = uv[k] + scale * step[k];
            Ft = vn_F(m, s, c0, c1, eta0, TA, TB, phi, trial, trial + qa, NULL, blk_t, store);
            if (isfinite(Ft) && Ft >= F - 1e-12 * fabs(F)) break;
        }
        if (!isfinite(Ft)) return NAN;
        for (int k = 0; k < d; k++) uv[k] = trial[k];
        for (int k = 0; k < BS; k++) blk[k] = blk_t[k];
        F = Ft;
    }
    return NAN;
}

/* vn_newton_from the warm start, and from 0 (the prior's mode) where that fails: a warm start left by an extreme
 * point can sit where exp overflows in the Hessian, and without the second try every later call would start there
 * and fail again (group_mode's reason; measured: a Poisson chain stuck for its whole run). */
static double vn_newton(const NGlmm *m, int s, int c0, int c1, const double *eta0, const double *TA,
                        const double *TB, double phi, double *uv, double tol, double *blk, double *fac, double *half,
                        double *store, double *w) {
    double F = vn_newton_from(m, s, c0, c1, eta0, TA, TB, phi, uv, tol, blk, fac, half, store, w);
    if (isfinite(F)) return F;
    for (int k = 0; k < m->qa + (c1 - c0) * m->qb; k++) uv[k] = 0.0;
    return vn_newton_from(m, s, c0, c1, eta0, TA, TB, phi, uv, tol, blk, fac, half, store, w);
}

/* Where H^-1 T_i has row i's nonzero parts: x_u = S^-1 (ta - M_c' tb), x_c = D_c^-1 tb - M_c x_u (Sinv, Dinv:
 * the explicit inverses); returns a_i = T_i' H^-1 T_i. */
static double vn_hinv_row(int qa, int qb, const double *Sinv, const double *Dinv, const double *M, const double *ta,
                          const double *tb, double *xu, double *xc) {
    double r[qa];
    for (int a = 0; a < qa; a++) {
        r[a] = ta[a];
        for (int b = 0; b < qb; b++) r[a] -= M[b * qa + a] * tb[b];
    }
    for (int a = 0; a < qa; a++) xu[a] = dot(Sinv + (size_t)a * qa, r, qa);
    for (int b = 0; b < qb; b++) xc[b] = dot(Dinv + (size_t)b * qb, tb, qb) - dot(M + (size_t)b * qa, xu, qa);
    return dot(ta, xu, qa) + dot(tb, xc, qb);
}

/* One outer level's Laplace approximation F - log|H|/2 at the mode uv (vn_newton's blk, fac, store there) and its
 * exact gradient, added to g_beta, g_phi and g_lam (Q x Q): laplace_group's formulas with T_i for t_i. w: scratch
 * of 2 vectors over all effects, qa^2 + nc qb^2. */
static double vn_laplace(const NGlmm *m, int s, int c0, int c1, const double *eta0, const double *TA,
                         const double *TB, double phi, const double *uv, const double *fac, double F, double half,
                         double *store, double *w, double *g_beta, double *g_phi, double *g_lam) {
    const int qa = m->qa, qb = m->qb, nc = c1 - c0, d = qa + nc * qb, FC = VN_FC(qa, qb), Q = m->Q, p = m->p;
    const int oa = m->off_a, ob = m->off_b;
    double *uvec = w, *lam = uvec + d, *Sinv = lam + d, *Dinv = Sinv + qa * qa;
    double d1, d2, dphi = 0.0, d1_phi = 0.0, d2_phi = 0.0;
    chol_inverse(fac, qa, Sinv);
    for (int c = 0; c < nc; c++) chol_inverse(fac + qa * qa + (size_t)c * FC, qb, Dinv + (size_t)c * qb * qb);
    for (int k = 0; k < d; k++) uvec[k] = 0.0;
    for (int c = c0; c < c1; c++) { /* l3 and each row's e_i = w_i l3_i a_i / 2; u = sum_i e_i T_i */
        const int lc = c - c0, r0 = (int)m->inner[c] - s, r1 = (int)m->inner[c + 1] - s;
        const double *vc = uv + qa + (size_t)lc * qb, *M = fac + qa * qa + (size_t)lc * FC + qb * qb;
        const double *Di = Dinv + (size_t)lc * qb * qb;
        double *uc = uvec + qa + (size_t)lc * qb;
        for (int i = r0; i < r1; i++) {
            const double *ta = TA + (size_t)i * qa, *tb = TB + (size_t)i * qb, wi = m->w[s + i];
            const double eta = eta0[i] + dot(ta, uv, qa) + dot(tb, vc, qb), y = m->y[s + i], n = m->ntr[s + i];
            double *st = store + VN_SW(qa, qb) * (size_t)i, d3;
            if (m->fam == GLMM_BINOMIAL_LOGIT) { /* l3 = l2 (1 - 2p), p from l1 = y - n p: no exp */
                d3 = n > 0.0 ? st[1] * (1.0 - 2.0 * (y - st[0]) / n) : 0.0;
            } else if (m->fam == GLMM_POISSON_LOG) {
                d3 = st[1];
            } else {
                if (m->P.n_dpar) row_ll(m->fam, y, n, eta, phi, &d1, &d2, &dphi);
                d3 = row_d3(m->fam, y, n, eta, phi, &d1_phi, &d2_phi);
            }
            const double ai = vn_hinv_row(qa, qb, Sinv, Di, M, ta, tb, st + 4, st + 4 + qa), e = 0.5 * wi * d3 * ai;
            st[2] = e; st[3] = d1_phi;
            for (int a = 0; a < qa; a++) uvec[a] += e * ta[a];
            for (int b = 0; b < qb; b++) uc[b] += e * tb[b];
            if (m->P.n_dpar) *g_phi += wi * (dphi + 0.5 * d2_phi * ai);
        }
    }
    vn_solve(m, nc, fac, uvec, lam);
    for (int c = c0; c < c1; c++) {
        const int lc = c - c0, r0 = (int)m->inner[c] - s, r1 = (int)m->inner[c + 1] - s;
        const double *vc = uv + qa + (size_t)lc * qb, *lc_ = lam + qa + (size_t)lc * qb;
        for (int i = r0; i < r1; i++) {
            const double *ta = TA + (size_t)i * qa, *tb = TB + (size_t)i * qb, wi = m->w[s + i];
            const double *Wi = m->W + (size_t)(s + i) * p, *st = store + VN_SW(qa, qb) * (size_t)i;
            const double *za = m->Za + (size_t)(s + i) * qa, *zb = m->Zb + (size_t)(s + i) * qb;
            const double *xu = st + 4, *xc = xu + qa;
            const double lt = dot(lam, ta, qa) + dot(lc_, tb, qb);
            const double A = wi * st[0] + st[2] + wi * st[1] * lt;
            for (int j = 0; j < p; j++) g_beta[j] += A * Wi[j];
            for (int a = 0; a < qa; a++)
                for (int b = 0; b < qa; b++)
                    g_lam[(oa + a) * Q + oa + b] += za[a] * (A * uv[b] + wi * (st[0] * lam[b] + st[1] * xu[b]));
            for (int a = 0; a < qb; a++)
                for (int b = 0; b < qb; b++)
                    g_lam[(ob + a) * Q + ob + b] += zb[a] * (A * vc[b] + wi * (st[0] * lc_[b] + st[1] * xc[b]));
            if (m->P.n_dpar) *g_phi += wi * st[3] * lt;
        }
    }
    return F - half;
}

/* One outer level's integral by nested adaptive quadrature (the value alone) from the joint mode uv and its
 * factor fac; NAN where an inner level's Newton step fails. w: scratch of n + nA + nB. */
static double vn_agq(const NGlmm *m, int s, int c0, int c1, const double *eta0, const double *TA, const double *TB,
                     double phi, const double *uv, const double *fac, double *w) {
    const int qa = m->qa, qb = m->qb, nA = m->nA, nB = m->nB, FC = VN_FC(qa, qb);
    const int n = (int)m->inner[c1] - s;
    double *base = w, *fk = base + n, *fj = fk + nA;
    double uk[qa], du[qa], vc[qb], vj[qb], g[qb], H[qb * qb], step[qb], d1, d2, dphi;
    double half_S = 0.0;
    for (int a = 0; a < qa; a++) half_S += log(fac[a * qa + a]);
    for (int k = 0; k < nA; k++) {
        chol_back(fac, qa, m->za_nodes + (size_t)k * qa, du);
        for (int a = 0; a < qa; a++) uk[a] = uv[a] + du[a];
        fk[k] = m->za_logw[k] - 0.5 * dot(uk, uk, qa);
        for (int i = 0; i < n; i++) base[i] = eta0[i] + dot(TA + (size_t)i * qa, uk, qa);
        for (int c = c0; c < c1; c++) {
            const int lc = c - c0, r0 = (int)m->inner[c] - s, r1 = (int)m->inner[c + 1] - s;
            const double *M = fac + qa * qa + (size_t)lc * FC + qb * qb, *vhat = uv + qa + (size_t)lc * qb;
            for (int b = 0; b < qb; b++) { /* the inner mode's linear prediction, then one Newton step */
                vc[b] = vhat[b] - dot(M + (size_t)b * qa, du, qa);
                g[b] = -vc[b];
                for (int b2 = 0; b2 < qb; b2++) H[b * qb + b2] = b == b2 ? 1.0 : 0.0;
            }
            for (int i = r0; i < r1; i++) {
                const double *tb = TB + (size_t)i * qb, wi = m->w[s + i];
                row_ll(m->fam, m->y[s + i], m->ntr[s + i], base[i] + dot(tb, vc, qb), phi, &d1, &d2, &dphi);
                for (int b = 0; b < qb; b++) {
                    g[b] += wi * d1 * tb[b];
                    for (int b2 = 0; b2 <= b; b2++) H[b * qb + b2] -= wi * d2 * tb[b] * tb[b2];
                }
            }
            if (!cholesky_inplace(H, qb)) return NAN;
            chol_solve(H, qb, g, step);
            double half_D = 0.0;
            for (int b = 0; b < qb; b++) { vc[b] += step[b]; half_D += log(H[b * qb + b]); }
            for (int j = 0; j < nB; j++) {
                chol_back(H, qb, m->zb_nodes + (size_t)j * qb, vj);
                for (int b = 0; b < qb; b++) vj[b] += vc[b];
                double f = m->zb_logw[j] - 0.5 * dot(vj, vj, qb);
                for (int i = r0; i < r1; i++)
                    f += m->w[s + i] * row_ll(m->fam, m->y[s + i], m->ntr[s + i],
                                              base[i] + dot(TB + (size_t)i * qb, vj, qb), phi, &d1, &d2, &dphi);
                fj[j] = f;
            }
            const double lj = log_sum_exp_normalise(fj, nB);
            if (!isfinite(lj)) return NAN;
            fk[k] += lj - half_D;
        }
    }
    return log_sum_exp_normalise(fk, nA) - half_S;
}

/* log p(y | beta, phi, Lam) for qa or qb above 1: Laplace (Ka = Kb = 1) with its gradient, else nested AGQ's value
 * alone (the gradient then NAN). NAN on failure. */
static double vnested_marginal(const NGlmm *m, const double *beta, double phi, const double *Lam, double *g_beta,
                               double *g_phi, double *g_lam) {
    const int qa = m->qa, qb = m->qb, R = m->max_rows, C = m->max_inner, Q = m->Q;
    const int laplace = m->Ka == 1 && m->Kb == 1;
    const size_t BS = qa + qa * qa + (size_t)C * VN_PC(qa, qb);
    double *eta0 = ntls.scratch, *TA = eta0 + R, *TB = TA + (size_t)R * qa, *store = TB + (size_t)R * qb;
    double *blk = store + VN_SW(qa, qb) * (size_t)R, *fac = blk + BS, *w = fac + qa * qa + (size_t)C * VN_FC(qa, qb);
    double total = 0.0, half;
    for (int j = 0; j < m->p; j++) g_beta[j] = 0.0;
    for (int k = 0; k < Q * Q; k++) g_lam[k] = 0.0;
    *g_phi = 0.0;
    for (int h = 0; h < m->Ga; h++) {
        const int c0 = (int)m->outer[h], c1 = (int)m->outer[h + 1];
        const int s = (int)m->inner[c0], n = (int)m->inner[c1] - s;
        double *uv = w, *rest = uv + qa + (size_t)(c1 - c0) * qb, *mu = ntls.modes + (size_t)h * qa;
        double *mv = ntls.modes + (size_t)m->Ga * qa + (size_t)c0 * qb;
        for (int a = 0; a < qa; a++) uv[a] = mu[a]; /* the warm start, contiguous */
        for (int k = 0; k < (c1 - c0) * qb; k++) uv[qa + k] = mv[k];
        vn_rows(m, s, n, beta, Lam, eta0, TA, TB);
        const double F = vn_newton(m, s, c0, c1, eta0, TA, TB, phi, uv, laplace ? 1e-9 : 1e-5, blk, fac, &half,
                                   laplace ? store : NULL, rest);
        if (!isfinite(F)) return NAN;
        for (int a = 0; a < qa; a++) mu[a] = uv[a];
        for (int k = 0; k < (c1 - c0) * qb; k++) mv[k] = uv[qa + k];
        const double lh = laplace ? vn_laplace(m, s, c0, c1, eta0, TA, TB, phi, uv, fac, F, half, store, rest,
                                               g_beta, g_phi, g_lam)
                                  : vn_agq(m, s, c0, c1, eta0, TA, TB, phi, uv, fac, rest);
        if (!isfinite(lh)) return NAN;
        total += lh;
        if (m->P.n_dpar)
            for (int i = 0; i < n; i++) {
                double dphi_i;
                total += m->w[s + i] * row_ll_phi(m->fam, m->y[s + i], phi, &dphi_i);
                *g_phi += m->w[s + i] * dphi_i;
            }
    }
    if (!laplace) { /* the check's reference: never sampled */
        for (int j = 0; j < m->p; j++) g_beta[j] = NAN;
        for (int k = 0; k < Q * Q; k++) g_lam[k] = NAN;
        *g_phi = NAN;
    }
    return total;
}

/* A multivariate t4 draw around 0 with scale L (L L' the precision): x = L'^-1 z sqrt(nu / chi2); its |z|^2 nu /
 * chi2 (the proposal density's argument) into *r2. */
static void vn_t_draw(uint64_t *state, const double *L, int q, double nu, double *x, double *r2) {
    double z[q];
    const double chi = -2.0 * log(uniform(state) * uniform(state)), scale = sqrt(nu / chi);
    *r2 = 0.0;
    for (int a = 0; a < q; a++) { z[a] = std_normal(state) * scale; *r2 += z[a] * z[a]; }
    chol_back(L, q, z, x);
}

static double vn_t_r2(const double *L, int q, const double *x) { /* |L' x|^2 */
    double r2 = 0.0;
    for (int a = 0; a < q; a++) {
        double t = 0.0;
        for (int b = a; b < q; b++) t += L[b * q + a] * x[b];
        r2 += t * t;
    }
    return r2;
}

/* nested_glmm_draw for qa or qb above 1: the scalar chain's two moves with multivariate t4 proposals from the
 * joint Laplace approximation, in the sheared coordinates w_c = v_c + M_c u (unit Jacobian): (1) u' ~ t4(uhat,
 * S^-1), v_c' = v_c - M_c (u' - u); (2) each v_c given u ~ t4(vhat_c - M_c (u - uhat), D_c^-1). Effects b = Lam u
 * into out_a (draws x outer levels x qa) and out_b (draws x inner levels x qb). */
static int64_t vnested_draw(const NGlmm *m, const double *buf, const double *xs, int64_t n_draws, int64_t steps,
                            uint64_t seed, double *out_a, double *out_b, double *accepted) {
    const Priors *P = &m->P;
    const int Q = m->Q, n_dim = (int)buf[1], nc_ = P->n_cor > 0 ? 2 * P->n_cor : 1, R = m->max_rows;
    const int C = m->max_inner, qa = m->qa, qb = m->qb, FC = VN_FC(qa, qb), oa = m->off_a, ob = m->off_b;
    const double nu = 4.0;
    const size_t BS = qa + qa * qa + (size_t)C * VN_PC(qa, qb), D = (size_t)qa + (size_t)C * qb;
    double vals[P->k], dxdz[P->k], cpc[nc_], Lcorr[Q * Q], Lam[Q * Q], grad[n_dim], du[qa], dv[qb], half;
    double *eta0 = ntls.scratch, *TA = eta0 + R, *TB = TA + (size_t)R * qa, *base = TB + (size_t)R * qb;
    double *blk = base + R, *fac = blk + BS, *uv = fac + qa * qa + (size_t)C * FC, *cur = uv + D, *prop = cur + D;
    double *fc = prop + D, *fp = fc + C, *w = fp + C;
    for (int64_t dr = 0; dr < n_draws; dr++) {
        uint64_t state = seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(dr + 1));
        prior_part(P, xs + dr * n_dim, grad, vals, dxdz, Lcorr, cpc, Lam);
        const double phi = P->n_dpar ? vals[m->p] : 0.0;
        double moves = 0.0, acc = 0.0;
        for (int h = 0; h < m->Ga; h++) {
            const int c0 = (int)m->outer[h], c1 = (int)m->outer[h + 1], nc = c1 - c0;
            const int s = (int)m->inner[c0], n = (int)m->inner[c1] - s;
            double *mu = ntls.modes + (size_t)h * qa, *mv = ntls.modes + (size_t)m->Ga * qa + (size_t)c0 * qb;
            for (int a = 0; a < qa; a++) uv[a] = mu[a];
            for (int k = 0; k < nc * qb; k++) uv[qa + k] = mv[k];
            vn_rows(m, s, n, vals, Lam, eta0, TA, TB);
            if (!isfinite(vn_newton(m, s, c0, c1, eta0, TA, TB, phi, uv, 1e-5, blk, fac, &half, NULL, w))) return 1;
            for (int a = 0; a < qa; a++) mu[a] = uv[a];
            for (int k = 0; k < nc * qb; k++) mv[k] = uv[qa + k];
            double cur_lr = 0.0, r2;
            for (int64_t step = 0; step < steps; step++) {
                /* (1) u in the sheared coordinates; at step 0 a draw of the whole proposal */
                vn_t_draw(&state, fac, qa, nu, du, &r2);
                for (int a = 0; a < qa; a++) prop[a] = uv[a] + du[a];
                for (int c = 0; c < nc; c++) {
                    const double *M = fac + qa * qa + (size_t)c * FC + qb * qb, *Dc = M - qb * qb;
                    double *pc = prop + qa + (size_t)c * qb, shift[qa];
                    if (step == 0) {
                        double r2c;
                        vn_t_draw(&state, Dc, qb, nu, dv, &r2c);
                        for (int b = 0; b < qb; b++) pc[b] = uv[qa + (size_t)c * qb + b] - dot(M + (size_t)b * qa, du, qa) + dv[b];
                    } else {
                        for (int a = 0; a < qa; a++) shift[a] = prop[a] - cur[a];
                        for (int b = 0; b < qb; b++) pc[b] = cur[qa + (size_t)c * qb + b] - dot(M + (size_t)b * qa, shift, qa);
                    }
                }
                const double Fp = vn_F(m, s, c0, c1, eta0, TA, TB, phi, prop, prop + qa, fp, NULL, NULL);
                const double lr = Fp + 0.5 * (nu + qa) * log1p(r2 / nu);
                if (step == 0 || (isfinite(lr) && log(uniform(&state)) < lr - cur_lr)) {
                    for (int k = 0; k < qa + nc * qb; k++) cur[k] = prop[k];
                    for (int c = 0; c < nc; c++) fc[c] = fp[c];
                    if (step > 0) acc += 1.0;
                }
                if (step > 0) moves += 1.0;
                /* (2) each v_c given u */
                for (int a = 0; a < qa; a++) du[a] = cur[a] - uv[a];
                for (int i = 0; i < n; i++) base[i] = eta0[i] + dot(TA + (size_t)i * qa, cur, qa);
                for (int c = 0; c < nc; c++) {
                    const int r0 = (int)m->inner[c0 + c] - s, r1 = (int)m->inner[c0 + c + 1] - s;
                    const double *M = fac + qa * qa + (size_t)c * FC + qb * qb, *Dc = M - qb * qb;
                    double centre[qb], vn[qb], off[qb], r2n, d1, d2, dphi;
                    double *cc = cur + qa + (size_t)c * qb;
                    for (int b = 0; b < qb; b++) centre[b] = uv[qa + (size_t)c * qb + b] - dot(M + (size_t)b * qa, du, qa);
                    vn_t_draw(&state, Dc, qb, nu, vn, &r2n);
                    for (int b = 0; b < qb; b++) { vn[b] += centre[b]; off[b] = cc[b] - centre[b]; }
                    double f = -0.5 * dot(vn, vn, qb);
                    for (int i = r0; i < r1; i++)
                        f += m->w[s + i] * row_ll(m->fam, m->y[s + i], m->ntr[s + i],
                                                  base[i] + dot(TB + (size_t)i * qb, vn, qb), phi, &d1, &d2, &dphi);
                    const double lq = 0.5 * (nu + qb) * (log1p(r2n / nu) - log1p(vn_t_r2(Dc, qb, off) / nu));
                    if (isfinite(f) && log(uniform(&state)) < f - fc[c] + lq) {
                        for (int b = 0; b < qb; b++) cc[b] = vn[b];
                        fc[c] = f; acc += 1.0;
                    }
                    moves += 1.0;
                }
                /* the sheared move's current value: F at the new state, with its own proposal density */
                double F = -0.5 * dot(cur, cur, qa);
                for (int c = 0; c < nc; c++) F += fc[c];
                cur_lr = F + 0.5 * (nu + qa) * log1p(vn_t_r2(fac, qa, du) / nu);
            }
            for (int b = 0; b < qa; b++) {
                double t = 0.0;
                for (int a = 0; a <= b; a++) t += Lam[(oa + b) * Q + oa + a] * cur[a];
                out_a[((size_t)dr * m->Ga + h) * qa + b] = t;
            }
            for (int c = 0; c < nc; c++)
                for (int b = 0; b < qb; b++) {
                    double t = 0.0;
                    for (int a = 0; a <= b; a++) t += Lam[(ob + b) * Q + ob + a] * cur[qa + (size_t)c * qb + a];
                    out_b[((size_t)dr * m->Gb + c0 + c) * qb + b] = t;
                }
        }
        accepted[dr] = moves > 0.0 ? acc / moves : 1.0;
    }
    return 0;
}

/* log p(y | beta, phi, sd_a, sd_b) by nested AGQ, and its gradient (see above). NAN on failure. */
static double nested_glmm_marginal(const NGlmm *m, const double *beta, double phi, const double *Lam,
                                   double *g_beta, double *g_phi, double *g_sa, double *g_sb) {
    const int p = m->p, Ka = m->Ka, Kb = m->Kb, nd = m->P.n_dpar, R = m->max_rows, C = m->max_inner;
    double total = 0.0;
    for (int j = 0; j < p; j++) g_beta[j] = 0.0;
    *g_phi = 0.0; *g_sa = 0.0; *g_sb = 0.0;
    double *eta0 = ntls.scratch, *ta = eta0 + R, *tb = ta + R, *base = tb + R;
    double *EA = base + R, *EB = EA + (size_t)R * Ka, *EP = EB + (size_t)R * Ka; /* per row and outer node */
    double *d1 = EP + (size_t)R * Ka, *dp = d1 + (size_t)R * Kb;                   /* per row and inner node */
    double *d = dp + (size_t)R * Kb, *dt = d + 2 + 3 * (size_t)C, *vt = dt + 2 + 3 * (size_t)C;
    double *fk = vt + C, *uk = fk + Ka, *fj = uk + Ka, *vj = fj + Kb, *pj = vj + Kb;
    for (int h = 0; h < m->Ga; h++) {
        const int c0 = (int)m->outer[h], c1 = (int)m->outer[h + 1], nc = c1 - c0;
        const int s = (int)m->inner[c0], n = (int)m->inner[c1] - s;
        double *u = ntls.modes + h, *v = ntls.modes + m->Ga + c0, S;
        vn_rows(m, s, n, beta, Lam, eta0, ta, tb);
        if (!isfinite(nested_newton(m, s, c0, c1, eta0, ta, tb, phi, u, v, 1e-5, &S, d, dt, vt))) return NAN;
        const double su = 1.0 / sqrt(S);
        for (int k = 0; k < Ka; k++) {
            const double uu = *u + su * m->za_nodes[k];
            uk[k] = uu;
            fk[k] = m->za_logw[k] - 0.5 * uu * uu;
            for (int i = 0; i < n; i++) base[i] = eta0[i] + ta[i] * uu;
            for (int c = 0; c < nc; c++) {
                const int r0 = (int)m->inner[c0 + c] - s, r1 = (int)m->inner[c0 + c + 1] - s, nr = r1 - r0;
                const double *y = m->y + s + r0, *ntr = m->ntr + s + r0, *w = m->w + s + r0;
                /* centred by one Newton step from the joint mode's linear prediction: AGQ needs no exact mode */
                double D, vc = v[c] - d[3 + 3 * c] / d[4 + 3 * c] * (uu - *u);
                if (!inner_step(m, nr, y, ntr, w, base + r0, tb + r0, phi, &vc, &D)) return NAN;
                const double lj = inner_nodes(m, nr, y, ntr, w, base + r0, tb + r0, phi, vc, 1.0 / sqrt(D), fj, vj,
                                              pj, d1, nd ? dp : NULL);
                if (!isfinite(lj)) return NAN;
                fk[k] += lj - 0.5 * log(D);
                for (int i = 0; i < nr; i++) { /* the inner rule's expectations for this outer node */
                    double a = 0.0, b = 0.0, e = 0.0;
                    for (int j = 0; j < Kb; j++) {
                        const double t = fj[j] * d1[(size_t)i * Kb + j];
                        a += t; b += t * vj[j];
                        if (nd) e += fj[j] * dp[(size_t)i * Kb + j];
                    }
                    const size_t at = (size_t)(r0 + i) * Ka + k;
                    EA[at] = a; EB[at] = b; EP[at] = e;
                }
            }
        }
        const double lk = log_sum_exp_normalise(fk, Ka);
        if (!isfinite(lk)) return NAN;
        total += lk - 0.5 * log(S);
        for (int i = 0; i < n; i++) {
            const double wi = m->w[s + i], *Wi = m->W + (size_t)(s + i) * p;
            double e = 0.0, eu = 0.0, ev = 0.0, ep = 0.0;
            for (int k = 0; k < Ka; k++) {
                const size_t at = (size_t)i * Ka + k;
                e += fk[k] * EA[at]; eu += fk[k] * uk[k] * EA[at]; ev += fk[k] * EB[at];
                if (nd) ep += fk[k] * EP[at];
            }
            for (int j = 0; j < p; j++) g_beta[j] += wi * e * Wi[j];
            *g_sa += wi * m->Za[s + i] * eu;
            *g_sb += wi * m->Zb[s + i] * ev;
            if (nd) {
                double dphi_i;
                total += wi * row_ll_phi(m->fam, m->y[s + i], phi, &dphi_i);
                *g_phi += wi * (ep + dphi_i);
            }
        }
    }
    return total;
}

double nested_glmm_log_density(const double *x, double *grad, const double *buf) {
    NGlmm m;
    read_nglmm(&m, buf);
    const Priors *P = &m.P;
    const int Q = m.Q, nb = m.p > 0 ? m.p : 1, nc = P->n_cor > 0 ? 2 * P->n_cor : 1;
    double vals[P->k], dxdz[P->k], g_beta[nb], cpc[nc], Lcorr[Q * Q], Lam[Q * Q], g_lam[Q * Q], g_phi, g_sa, g_sb;
    if (!ntls_ready(&m, buf)) return NAN;
    double lp = prior_part(P, x, grad, vals, dxdz, Lcorr, cpc, Lam);
    const double phi = P->n_dpar ? vals[m.p] : 0.0;
    if (m.qa > 1 || m.qb > 1) {
        const double ll = vnested_marginal(&m, vals, phi, Lam, g_beta, &g_phi, g_lam);
        if (!isfinite(ll)) return -INFINITY;
        chain_back(P, vals, dxdz, Lcorr, cpc, g_beta, &g_phi, g_lam, grad);
        return lp + ll;
    }
    const double ll = nested_glmm_marginal(&m, vals, phi, Lam, g_beta, &g_phi, &g_sa, &g_sb);
    if (!isfinite(ll)) return -INFINITY;
    for (int i = 0; i < Q * Q; i++) g_lam[i] = 0.0;
    g_lam[m.off_a * (Q + 1)] = g_sa; g_lam[m.off_b * (Q + 1)] = g_sb;
    chain_back(P, vals, dxdz, Lcorr, cpc, g_beta, &g_phi, g_lam, grad);
    return lp + ll;
}

int64_t nested_glmm_logp(uint64_t dim, const double *x, double *out, double *logp, const double *buf) {
    return glmm_callback(dim, x, out, logp, buf, nested_glmm_log_density);
}

/* The random effects of each draw x[d] from their exact conditional, by a Metropolis-within-Gibbs chain of `steps`
 * sweeps per outer level, started at its own proposal (the joint Laplace approximation, with t tails). With
 * b_c = -H_uc / H_cc from the joint mode, a sweep (1) moves u in the sheared coordinates w_c = v_c - b_c u (unit
 * Jacobian), where the Laplace approximation makes u independent of w with variance 1/S: an independence proposal
 * u' ~ t4(uhat, 1/S), v_c' = v_c + b_c (u' - u); then (2) each v_c given u by an independence proposal
 * t4(vhat_c + b_c (u - uhat), 1/H_cc). Both leave p(u, v | y_h, theta) invariant, and being one-dimensional they
 * accept at the same rate however many inner levels share u (a joint proposal in 1 + n_c dimensions would not).
 * Several terms per level: vnested_draw. Effects b = sd u into out_a (draws x outer levels) and out_b (draws x
 * inner levels); accepted[d]: the share of moves after the first accepted. Returns 0, or 1 where a mode could not
 * be found. */
int64_t nested_glmm_draw(const double *buf, const double *xs, int64_t n_draws, int64_t steps, uint64_t seed,
                         double *out_a, double *out_b, double *accepted) {
    NGlmm m;
    read_nglmm(&m, buf);
    const Priors *P = &m.P;
    const int Q = m.Q, n_dim = (int)buf[1], nc_ = P->n_cor > 0 ? 2 * P->n_cor : 1, R = m.max_rows, C = m.max_inner;
    const double nu = 4.0;
    double vals[P->k], dxdz[P->k], cpc[nc_], Lcorr[Q * Q], Lam[Q * Q], grad[n_dim];
    if (!ntls_ready(&m, buf)) return 1;
    if (m.qa > 1 || m.qb > 1) return vnested_draw(&m, buf, xs, n_draws, steps, seed, out_a, out_b, accepted);
    double *eta0 = ntls.scratch, *ta = eta0 + R, *tb = ta + R, *base = tb + R;
    double *d = base + R, *dt = d + 2 + 3 * (size_t)C, *vt = dt + 2 + 3 * (size_t)C;
    double *cv = vt + C, *fc = cv + C, *fp = fc + C, *vp = fp + C, *bc = vp + C;
    for (int64_t dr = 0; dr < n_draws; dr++) {
        uint64_t state = seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(dr + 1));
        prior_part(P, xs + dr * n_dim, grad, vals, dxdz, Lcorr, cpc, Lam);
        const double phi = P->n_dpar ? vals[m.p] : 0.0, sa = Lam[m.off_a * (Q + 1)], sb = Lam[m.off_b * (Q + 1)];
        double moves = 0.0, acc = 0.0;
        for (int h = 0; h < m.Ga; h++) {
            const int c0 = (int)m.outer[h], c1 = (int)m.outer[h + 1], nc = c1 - c0;
            const int s = (int)m.inner[c0], n = (int)m.inner[c1] - s;
            double *uh = ntls.modes + h, *vh = ntls.modes + m.Ga + c0, S;
            vn_rows(&m, s, n, vals, Lam, eta0, ta, tb);
            if (!isfinite(nested_newton(&m, s, c0, c1, eta0, ta, tb, phi, uh, vh, 1e-5, &S, d, dt, vt))) return 1;
            const double su = 1.0 / sqrt(S);
            for (int c = 0; c < nc; c++) bc[c] = -d[3 + 3 * c] / d[4 + 3 * c];
            double cu = 0.0, cur_lr = 0.0;
            for (int64_t step = 0; step < steps; step++) {
                /* (1) u in the sheared coordinates; at step 0 a draw of the whole proposal */
                double chi = -2.0 * log(uniform(&state) * uniform(&state));
                const double z = std_normal(&state) * sqrt(nu / chi), up = *uh + su * z;
                for (int c = 0; c < nc; c++) {
                    if (step == 0) {
                        double chi_c = -2.0 * log(uniform(&state) * uniform(&state));
                        vp[c] = vh[c] + bc[c] * (up - *uh) + std_normal(&state) * sqrt(nu / chi_c) / sqrt(d[4 + 3 * c]);
                    } else {
                        vp[c] = cv[c] + bc[c] * (up - cu);
                    }
                }
                const double Fp = nested_F(&m, s, c0, c1, eta0, ta, tb, phi, up, vp, fp, NULL);
                const double lr = Fp + 0.5 * (nu + 1.0) * log1p(z * z / nu);
                if (step == 0 || (isfinite(lr) && log(uniform(&state)) < lr - cur_lr)) {
                    cu = up;
                    for (int c = 0; c < nc; c++) { cv[c] = vp[c]; fc[c] = fp[c]; }
                    if (step > 0) acc += 1.0;
                    cur_lr = lr;
                }
                if (step > 0) moves += 1.0;
                /* (2) each v_c given u */
                for (int i = 0; i < n; i++) base[i] = eta0[i] + ta[i] * cu;
                for (int c = 0; c < nc; c++) {
                    const int r0 = (int)m.inner[c0 + c] - s, r1 = (int)m.inner[c0 + c + 1] - s;
                    const double centre = vh[c] + bc[c] * (cu - *uh), sd = 1.0 / sqrt(d[4 + 3 * c]);
                    double chi_c = -2.0 * log(uniform(&state) * uniform(&state));
                    const double zc = std_normal(&state) * sqrt(nu / chi_c), vn = centre + sd * zc;
                    double f = -0.5 * vn * vn, d1, d2, dphi;
                    for (int i = r0; i < r1; i++)
                        f += m.w[s + i] * row_ll(m.fam, m.y[s + i], m.ntr[s + i], base[i] + tb[i] * vn, phi, &d1,
                                                 &d2, &dphi);
                    const double zo = (cv[c] - centre) / sd;
                    const double lq = 0.5 * (nu + 1.0) * (log1p(zc * zc / nu) - log1p(zo * zo / nu));
                    if (isfinite(f) && log(uniform(&state)) < f - fc[c] + lq) {
                        cv[c] = vn; fc[c] = f; acc += 1.0;
                    }
                    moves += 1.0;
                }
                /* the sheared move's current value: F at the new state, with its own proposal density */
                double F = -0.5 * cu * cu;
                for (int c = 0; c < nc; c++) F += fc[c];
                const double zu = (cu - *uh) / su;
                cur_lr = F + 0.5 * (nu + 1.0) * log1p(zu * zu / nu);
            }
            out_a[(size_t)dr * m.Ga + h] = sa * cu;
            for (int c = 0; c < nc; c++) out_b[(size_t)dr * m.Gb + c0 + c] = sb * cv[c];
        }
        accepted[dr] = moves > 0.0 ? acc / moves : 1.0;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Two nested factors (kernel.py's FactorsKernel, function "nested"; algebra.py's NestedPair): the inner levels b
 * within the outer levels a, every effect integrated out. Ordered inner first, A = [[A_bb, A_ba], [A_ab, A_aa]]:
 * A_bb is block diagonal (q_b x q_b per inner level) and A_ba = Lam_b' (Zb'Za)_g Lam_a / s2 is nonzero only at
 * the inner level's own outer level, so the Schur complement S = A_aa - A_ab A_bb^-1 A_ba is block diagonal by
 * outer level and both factorisations are batched: the cost is linear in the levels. The gradient needs the
 * blocks of P = A^-1 where A is nonzero (a selected inversion):
 *   P_aa = S^-1,  P_ba = -A_bb^-1 A_ba S^-1,  P_bb = A_bb^-1 + A_bb^-1 A_ba S^-1 A_ab A_bb^-1;
 * then dl/dA = -(P + m m'/s4)/2 (m = A^-1 c) goes back through each block as in marginal_loglik, the
 * off-diagonal block twice (A holds it and its transpose). The inner levels come sorted by outer level:
 * starts[h] .. starts[h + 1] - 1 are outer level h's. Scratch space, G_b (2 q_b^2 + 2 q_b q_a + 2 q_b) floats,
 * is on the heap. */
double nested_log_density(const double *x, double *grad, const double *buf) {
    const int p = (int)buf[2], Q = (int)buf[3], n_cor = (int)buf[5];
    const double n = buf[6], yty = buf[7];
    Priors P;
    const double *o = read_priors(&P, buf + HEADER, p, 1, Q, n_cor);
    const double *shift = o; o += p;
    const double *WtW = o; o += (size_t)p * p;
    const double *Wty = o; o += p;
    FactorSums fa, fb; /* outer, inner */
    o = read_factor(&fa, o, p);
    o = read_factor(&fb, o, p);
    const double *starts = o; o += fa.G + 1;
    const double *ZbZa = o; /* (G_b, q_b, q_a) */
    const int qa = fa.q, qb = fb.q;

    const int nb = p > 0 ? p : 1, nc = n_cor > 0 ? 2 * n_cor : 1;
    double vals[P.k], dxdz[P.k], beta[nb], g_beta[nb], cpc[nc];
    double Lcorr[Q * Q], Lam[Q * Q], g_lam[Q * Q], La[qa * qa], Lb[qb * qb], gLa[qa * qa], gLb[qb * qb];
    double lp = prior_part(&P, x, grad, vals, dxdz, Lcorr, cpc, Lam);
    for (int k = 0; k < p; k++) beta[k] = vals[k] - shift[k];
    sub_block(Lam, Q, fa.off, qa, La);
    sub_block(Lam, Q, fb.off, qb, Lb);
    const double sigma = vals[p], s2 = sigma * sigma, s4 = s2 * s2;
    /* per inner level: L_g, M_g', w_g, r_g, and Zb'Zb_g Lb and (Zb'Za)_g La for the backward pass */
    const size_t per = 2 * (size_t)qb * qb + 2 * (size_t)qb * qa + 2 * (size_t)qb;
    double *scratch = malloc(sizeof(double) * per * (size_t)(fb.G > 0 ? fb.G : 1));
    if (!scratch) return NAN;

    double rr = yty, g_s2 = 0.0, logdet = 0.0, quad = 0.0;
    for (int i = 0; i < p; i++) {
        double wb = 0.0;
        for (int j = 0; j < p; j++) wb += WtW[i * p + j] * beta[j];
        rr += beta[i] * (wb - 2.0 * Wty[i]);
        g_beta[i] = (Wty[i] - wb) / s2;
    }
    for (int i = 0; i < qa * qa; i++) gLa[i] = 0.0;
    for (int i = 0; i < qb * qb; i++) gLb[i] = 0.0;
    int ok = 1;
    for (int h = 0; h < fa.G && ok; h++) {
        const int g0 = (int)starts[h], g1 = (int)starts[h + 1];
        const double *Zaa = fa.ZtZ + (size_t)h * qa * qa, *ZaW = fa.ZtW + (size_t)h * qa * p;
        double ra[qa], d[qa], wa[qa], ma[qa], la[qa], Maa[qa * qa], Baa[qa * qa], S[qa * qa], SL[qa * qa];
        double Sinv[qa * qa], GAaa[qa * qa];
        for (int i = 0; i < qa; i++) {
            double t = fa.Zty[(size_t)h * qa + i];
            for (int j = 0; j < p; j++) t -= ZaW[i * p + j] * beta[j];
            ra[i] = t;
        }
        for (int j = 0; j < qa; j++) { /* d = c_a = La' r_a (then less the inner levels' part), Maa = Z'Z_h La */
            double t = 0.0;
            for (int i = 0; i < qa; i++) t += La[i * qa + j] * ra[i];
            d[j] = t;
            for (int i = 0; i < qa; i++) {
                t = 0.0;
                for (int k = 0; k < qa; k++) t += Zaa[i * qa + k] * La[k * qa + j];
                Maa[i * qa + j] = t;
            }
        }
        for (int i = 0; i < qa; i++) /* Baa = A_aa - I; S starts at A_aa */
            for (int j = 0; j <= i; j++) {
                double t = 0.0;
                for (int k = 0; k < qa; k++) t += La[k * qa + i] * Maa[k * qa + j];
                Baa[i * qa + j] = Baa[j * qa + i] = t / s2;
                S[i * qa + j] = S[j * qa + i] = t / s2 + (i == j ? 1.0 : 0.0);
            }
        for (int g = g0; g < g1; g++) {
            double *L = scratch + (size_t)g * per, *Mt = L + qb * qb, *w = Mt + qb * qa, *rb = w + qb;
            double *Mbb = rb + qb, *KLa = Mbb + qb * qb;
            const double *Zbb = fb.ZtZ + (size_t)g * qb * qb, *ZbW = fb.ZtW + (size_t)g * qb * p;
            const double *K = ZbZa + (size_t)g * qb * qa;
            for (int i = 0; i < qb; i++) {
                double t = fb.Zty[(size_t)g * qb + i];
                for (int j = 0; j < p; j++) t -= ZbW[i * p + j] * beta[j];
                rb[i] = t;
            }
            for (int i = 0; i < qb; i++) {
                for (int j = 0; j < qb; j++) {
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += Zbb[i * qb + k] * Lb[k * qb + j];
                    Mbb[i * qb + j] = t;
                }
                for (int j = 0; j < qa; j++) {
                    double t = 0.0;
                    for (int k = 0; k < qa; k++) t += K[i * qa + k] * La[k * qa + j];
                    KLa[i * qa + j] = t;
                }
            }
            for (int i = 0; i < qb; i++) { /* L = A_bb (factored below), Mt = A_ba = Lb' K La / s2, w = c_b */
                for (int j = 0; j <= i; j++) {
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += Lb[k * qb + i] * Mbb[k * qb + j];
                    L[i * qb + j] = L[j * qb + i] = t / s2 + (i == j ? 1.0 : 0.0);
                }
                for (int j = 0; j < qa; j++) {
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += Lb[k * qb + i] * KLa[k * qa + j];
                    Mt[i * qa + j] = t / s2;
                }
                double t = 0.0;
                for (int k = 0; k < qb; k++) t += Lb[k * qb + i] * rb[k];
                w[i] = t;
            }
            if (!cholesky_inplace(L, qb)) { ok = 0; break; }
            for (int i = 0; i < qb; i++) { /* w = L^-1 c_b, Mt = L^-1 A_ba (forward solves) */
                logdet += 2.0 * log(L[i * qb + i]);
                for (int k = 0; k < i; k++) {
                    w[i] -= L[i * qb + k] * w[k];
                    for (int j = 0; j < qa; j++) Mt[i * qa + j] -= L[i * qb + k] * Mt[k * qa + j];
                }
                w[i] /= L[i * qb + i];
                for (int j = 0; j < qa; j++) Mt[i * qa + j] /= L[i * qb + i];
                quad += w[i] * w[i];
            }
            for (int i = 0; i < qa; i++) { /* S -= Mt' Mt, d -= Mt' w */
                for (int j = 0; j < qa; j++) {
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += Mt[k * qa + i] * Mt[k * qa + j];
                    S[i * qa + j] -= t;
                }
                double t = 0.0;
                for (int k = 0; k < qb; k++) t += Mt[k * qa + i] * w[k];
                d[i] -= t;
            }
        }
        if (!ok) break;
        for (int i = 0; i < qa * qa; i++) SL[i] = S[i];
        if (!cholesky_inplace(SL, qa)) { ok = 0; break; }
        for (int i = 0; i < qa; i++) { /* w_a = L_S^-1 d */
            double t = d[i];
            for (int k = 0; k < i; k++) t -= SL[i * qa + k] * wa[k];
            wa[i] = t / SL[i * qa + i];
            quad += wa[i] * wa[i];
            logdet += 2.0 * log(SL[i * qa + i]);
        }
        chol_back(SL, qa, wa, ma); /* m_a = S^-1 d: the outer block of A^-1 c */
        lower_inverse(SL, qa, S);  /* S now holds L_S^-1; Sinv = L_S'^-1 L_S^-1 */
        for (int i = 0; i < qa; i++)
            for (int j = 0; j < qa; j++) {
                double t = 0.0;
                for (int k = (i > j ? i : j); k < qa; k++) t += S[k * qa + i] * S[k * qa + j];
                Sinv[i * qa + j] = t;
                GAaa[i * qa + j] = -0.5 * (t + ma[i] * ma[j] / s4);
            }
        double tr = 0.0;
        for (int i = 0; i < qa * qa; i++) tr += GAaa[i] * Baa[i];
        g_s2 -= tr / s2;
        for (int i = 0; i < qa; i++) { /* dl/dc_a = m_a/s4: to beta through r_a, to La through c_a = La' r_a */
            double t = 0.0;
            for (int j = 0; j < qa; j++) t += La[i * qa + j] * ma[j];
            la[i] = t / s4;
        }
        for (int j = 0; j < p; j++) {
            double t = 0.0;
            for (int i = 0; i < qa; i++) t += ZaW[i * p + j] * la[i];
            g_beta[j] -= t;
        }
        for (int i = 0; i < qa; i++)
            for (int j = 0; j < qa; j++) {
                double t = 0.0;
                for (int k = 0; k < qa; k++) t += Maa[i * qa + k] * GAaa[k * qa + j];
                gLa[i * qa + j] += 2.0 * t / s2 + ra[i] * ma[j] / s4;
            }
        for (int g = g0; g < g1; g++) {
            const double *L = scratch + (size_t)g * per, *Mt = L + qb * qb, *w = Mt + qb * qa, *rb = w + qb;
            const double *Mbb = rb + qb, *KLa = Mbb + qb * qb; /* Zb'Zb_g Lb and (Zb'Za)_g La, from the first pass */
            const double *ZbW = fb.ZtW + (size_t)g * qb * p;
            const double *K = ZbZa + (size_t)g * qb * qa;
            double Li[qb * qb], mb[qb], e[qb], T[qb * qa], U[qb * qa], B[qb * qb], Pbb[qb * qb], GAbb[qb * qb];
            double GAba[qb * qa], KtLb[qa * qb], lbv[qb];
            for (int i = 0; i < qb; i++) { /* m_b = L'^-1 (w - Mt m_a) */
                double t = w[i];
                for (int j = 0; j < qa; j++) t -= Mt[i * qa + j] * ma[j];
                e[i] = t;
            }
            chol_back(L, qb, e, mb);
            lower_inverse(L, qb, Li);
            for (int i = 0; i < qb; i++) /* T = Mt Sinv */
                for (int j = 0; j < qa; j++) {
                    double t = 0.0;
                    for (int k = 0; k < qa; k++) t += Mt[i * qa + k] * Sinv[k * qa + j];
                    T[i * qa + j] = t;
                }
            for (int i = 0; i < qb; i++) /* B = I + T Mt' */
                for (int j = 0; j < qb; j++) {
                    double t = i == j ? 1.0 : 0.0;
                    for (int k = 0; k < qa; k++) t += T[i * qa + k] * Mt[j * qa + k];
                    B[i * qb + j] = t;
                }
            for (int i = 0; i < qb; i++) { /* U = Li' T = -P_ba; Pbb = Li' B Li */
                for (int j = 0; j < qa; j++) {
                    double t = 0.0;
                    for (int k = i; k < qb; k++) t += Li[k * qb + i] * T[k * qa + j];
                    U[i * qa + j] = t;
                }
            }
            for (int i = 0; i < qb; i++)
                for (int j = 0; j < qb; j++) {
                    double t = 0.0;
                    for (int k = i; k < qb; k++)
                        for (int l = j; l < qb; l++) t += Li[k * qb + i] * B[k * qb + l] * Li[l * qb + j];
                    Pbb[i * qb + j] = t;
                }
            for (int i = 0; i < qb; i++) {
                for (int j = 0; j < qb; j++) GAbb[i * qb + j] = -0.5 * (Pbb[i * qb + j] + mb[i] * mb[j] / s4);
                for (int j = 0; j < qa; j++) GAba[i * qa + j] = -0.5 * (-U[i * qa + j] + mb[i] * ma[j] / s4);
            }
            /* dl/ds2, dl/dLb, dl/dLa and dl/dbeta through the blocks of A */
            for (int i = 0; i < qa; i++)
                for (int j = 0; j < qb; j++) {
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += K[k * qa + i] * Lb[k * qb + j];
                    KtLb[i * qb + j] = t;
                }
            double trb = 0.0;
            for (int i = 0; i < qb; i++) {
                for (int j = 0; j < qb; j++) { /* tr(GA_bb (A_bb - I)) */
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += Lb[k * qb + i] * Mbb[k * qb + j];
                    trb += GAbb[i * qb + j] * t / s2;
                }
                for (int j = 0; j < qa; j++) { /* 2 tr(GA_ba' A_ba) */
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += Lb[k * qb + i] * KLa[k * qa + j];
                    trb += 2.0 * GAba[i * qa + j] * t / s2;
                }
            }
            g_s2 -= trb / s2;
            for (int i = 0; i < qb; i++)
                for (int j = 0; j < qb; j++) { /* dl/dLb = 2 Mbb GA_bb / s2 + 2 K La GA_ba' / s2 + r_b (m_b/s4)' */
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += Mbb[i * qb + k] * GAbb[k * qb + j];
                    for (int k = 0; k < qa; k++) t += KLa[i * qa + k] * GAba[j * qa + k];
                    gLb[i * qb + j] += 2.0 * t / s2 + rb[i] * mb[j] / s4;
                }
            for (int i = 0; i < qa; i++)
                for (int j = 0; j < qa; j++) { /* dl/dLa += 2 K' Lb GA_ba / s2 */
                    double t = 0.0;
                    for (int k = 0; k < qb; k++) t += KtLb[i * qb + k] * GAba[k * qa + j];
                    gLa[i * qa + j] += 2.0 * t / s2;
                }
            for (int i = 0; i < qb; i++) {
                double t = 0.0;
                for (int j = 0; j < qb; j++) t += Lb[i * qb + j] * mb[j];
                lbv[i] = t / s4;
            }
            for (int j = 0; j < p; j++) {
                double t = 0.0;
                for (int i = 0; i < qb; i++) t += ZbW[i * p + j] * lbv[i];
                g_beta[j] -= t;
            }
        }
    }
    free(scratch);
    if (!ok) return -INFINITY;
    for (int i = 0; i < Q * Q; i++) g_lam[i] = 0.0;
    for (int i = 0; i < qa; i++)
        for (int j = 0; j < qa; j++) g_lam[(fa.off + i) * Q + fa.off + j] = gLa[i * qa + j];
    for (int i = 0; i < qb; i++)
        for (int j = 0; j < qb; j++) g_lam[(fb.off + i) * Q + fb.off + j] = gLb[i * qb + j];
    g_s2 += -0.5 * n / s2 + 0.5 * rr / s4 - quad / (s4 * s2);
    double g_sigma = 2.0 * sigma * g_s2;
    chain_back(&P, vals, dxdz, Lcorr, cpc, g_beta, &g_sigma, g_lam, grad);
    return lp + -0.5 * (n * (LOG_2PI + log(s2)) + logdet + (rr - quad / s2) / s2);
}

int64_t nested_logp(uint64_t dim, const double *x, double *out, double *logp, const double *buf) {
    return callback(dim, x, out, logp, buf, nested_log_density);
}

int64_t lmm_logp(uint64_t dim, const double *x, double *out, double *logp, const double *buf) {
    return callback(dim, x, out, logp, buf, lmm_log_density);
}

/* nutpie's expand callback: the draws are the unconstrained vector itself. */
int64_t lmm_expand(uint64_t dim, uint64_t n_expanded, const double *x, double *out, const double *buf) {
    (void)buf;
    if (dim != n_expanded) return -1;
    for (uint64_t i = 0; i < dim; i++) out[i] = x[i];
    return 0;
}

/* An importable (empty) module, so that setuptools builds and installs the shared object. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel",
                                    "C kernel of the collapsed engine; loaded with ctypes by kernel.py.", -1,
                                    NULL};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
