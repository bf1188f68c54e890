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

#define HEADER 8 /* total length, n_dim, n_beta, q, levels, pairs, N, y'y */
static const double LOG_2PI = 1.8378770664093453;

static double log_sigmoid(double z) { return z > -30.0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }

static double sigmoid(double z) {
    if (z >= 0.0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
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
static int cholesky_inplace(double *A, int q) {
    for (int j = 0; j < q; j++) {
        double s = A[j * q + j];
        for (int k = 0; k < j; k++) s -= A[j * q + k] * A[j * q + k];
        if (!(s > 0.0)) return 0;
        A[j * q + j] = sqrt(s);
        for (int i = j + 1; i < q; i++) {
            double t = A[i * q + j];
            for (int k = 0; k < j; k++) t -= A[i * q + k] * A[j * q + k];
            A[i * q + j] = t / A[j * q + j];
        }
    }
    return 1;
}

/* log p(y | beta, sigma, Lam) from the cross-products (see kernel.py for the algebra).
 * Writes dl/dbeta into g_beta, dl/dLam into g_lam and dl/dsigma into *g_sigma;
 * returns -inf where some A_g is not positive definite (overflow only). */
static double marginal_loglik(int p, int G, int q, const double *beta, double sigma, const double *Lam,
                              double n, const double *WtW, const double *Wty, double yty, const double *ZtZ,
                              const double *ZtW, const double *Zty, double *g_beta, double *g_lam,
                              double *g_sigma) {
    double s2 = sigma * sigma, s4 = s2 * s2, rr = yty, g_s2 = 0.0, logdet = 0.0, quad = 0.0;
    double r[q], c[q], v[q], m[q], lg[q], M[q * q], A[q * q], Linv[q * q], P[q * q], GA[q * q];
    for (int i = 0; i < p; i++) {
        double wb = 0.0;
        for (int j = 0; j < p; j++) wb += WtW[i * p + j] * beta[j];
        rr += beta[i] * (wb - 2.0 * Wty[i]);
        g_beta[i] = (Wty[i] - wb) / s2;
    }
    for (int i = 0; i < q * q; i++) g_lam[i] = 0.0;
    for (int g = 0; g < G; g++) {
        const double *ZtZ_g = ZtZ + (size_t)g * q * q, *ZtW_g = ZtW + (size_t)g * q * p;
        for (int i = 0; i < q; i++) {
            double t = Zty[(size_t)g * q + i];
            for (int j = 0; j < p; j++) t -= ZtW_g[i * p + j] * beta[j];
            r[i] = t;
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
                A[i * q + j] = A[j * q + i] = t / s2 + (i == j ? 1.0 : 0.0);
                P[i * q + j] = P[j * q + i] = t / s2;
            }
        if (!cholesky_inplace(A, q)) { *g_sigma = 0.0; return -INFINITY; }
        for (int i = 0; i < q; i++) logdet += 2.0 * log(A[i * q + i]);
        for (int i = 0; i < q; i++) { /* v = L^-1 c */
            double t = c[i];
            for (int k = 0; k < i; k++) t -= A[i * q + k] * v[k];
            v[i] = t / A[i * q + i];
            quad += v[i] * v[i];
        }
        for (int i = q - 1; i >= 0; i--) { /* m = L'^-1 v = A^-1 c */
            double t = v[i];
            for (int k = i + 1; k < q; k++) t -= A[k * q + i] * m[k];
            m[i] = t / A[i * q + i];
        }
        for (int j = 0; j < q; j++) /* Linv = L^-1, column by column */
            for (int i = 0; i < q; i++) {
                if (i < j) { Linv[i * q + j] = 0.0; continue; }
                double t = i == j ? 1.0 : 0.0;
                for (int k = j; k < i; k++) t -= A[i * q + k] * Linv[k * q + j];
                Linv[i * q + j] = t / A[i * q + i];
            }
        double trace_GA_AmI = 0.0;
        for (int i = 0; i < q; i++) /* GA = -(A^-1 + m m'/s4)/2, A^-1 = Linv' Linv */
            for (int j = 0; j < q; j++) {
                double t = 0.0;
                for (int k = (i > j ? i : j); k < q; k++) t += Linv[k * q + i] * Linv[k * q + j];
                GA[i * q + j] = -0.5 * (t + m[i] * m[j] / s4);
            }
        for (int i = 0; i < q; i++)
            for (int j = 0; j < q; j++) trace_GA_AmI += GA[i * q + j] * P[j * q + i];
        g_s2 -= trace_GA_AmI / s2;
        for (int i = 0; i < q; i++) { /* dl/dc = m/s4; dl/dbeta -= Z'W_g' Lam dl/dc */
            lg[i] = 0.0;
            for (int j = 0; j < q; j++) lg[i] += Lam[i * q + j] * m[j] / s4;
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
                g_lam[i * q + j] += 2.0 * t / s2 + r[i] * m[j] / s4;
            }
    }
    g_s2 += -0.5 * n / s2 + 0.5 * rr / s4 - quad / (s4 * s2);
    *g_sigma = 2.0 * sigma * g_s2;
    return -0.5 * (n * (LOG_2PI + log(s2)) + logdet + (rr - quad / s2) / s2);
}

/* Log density (priors, Jacobians, marginal likelihood) at x; its gradient into grad.
 * Parameter k is u_k on [lo_k, hi_k]; its prior is evaluated at a_k + b_k u_k (the user's scale) and the
 * likelihood at alpha_k + beta_k u_k (standardised units), both exact linear maps. */
double lmm_log_density(const double *x, double *grad, const double *buf) {
    const int n_beta = (int)buf[2], q = (int)buf[3], G = (int)buf[4], n_pairs = (int)buf[5];
    const double n = buf[6], yty = buf[7];
    const int k_prior = n_beta + 1 + q;
    const double *o = buf + HEADER;
    const double *fam = o; o += k_prior;
    const double *args = o; o += 3 * k_prior;
    const double *lo = o; o += k_prior;
    const double *hi = o; o += k_prior;
    const double *pa = o; o += k_prior;
    const double *pb = o; o += k_prior;
    const double *alpha = o; o += k_prior;
    const double *beta_ = o; o += k_prior;
    const double *pair_a = o; o += n_pairs;
    const double *pair_b = o; o += n_pairs;
    const double *eta = o; o += n_pairs;
    const double *shift = o; o += n_beta;
    const double *WtW = o; o += (size_t)n_beta * n_beta;
    const double *Wty = o; o += n_beta;
    const double *ZtZ = o; o += (size_t)G * q * q;
    const double *ZtW = o; o += (size_t)G * q * n_beta;
    const double *Zty = o;

    const int nb = n_beta > 0 ? n_beta : 1, np_ = n_pairs > 0 ? n_pairs : 1; /* no zero-length arrays */
    double vals[k_prior], dxdz[k_prior], beta[nb], g_beta[nb], rho[np_];
    double Lcorr[q * q], Lam[q * q], g_lam[q * q];
    double lp = 0.0, g_sigma;
    for (int k = 0; k < k_prior; k++) {
        double uk, dk, lj, dlj, f_lp, f_d;
        constrain(lo[k], hi[k], x[k], &uk, &dk, &lj, &dlj);
        family_lp((int)fam[k], args + 3 * k, pa[k] + pb[k] * uk, &f_lp, &f_d);
        lp += f_lp + lj;
        grad[k] = dlj + f_d * pb[k] * dk; /* the likelihood's part is added below */
        vals[k] = alpha[k] + beta_[k] * uk;
        dxdz[k] = beta_[k] * dk;
    }
    for (int k = 0; k < n_beta; k++) beta[k] = vals[k] - shift[k];
    const double sigma = vals[n_beta];
    for (int i = 0; i < q * q; i++) Lcorr[i] = (i % (q + 1) == 0) ? 1.0 : 0.0;
    for (int j = 0; j < n_pairs; j++) { /* rho = tanh(z/2): LKJ(eta) is (1 - rho^2)^(eta - 1) */
        int a = (int)pair_a[j], b = (int)pair_b[j];
        double z = x[k_prior + j], ls = log_sigmoid(z), lsm = log_sigmoid(-z);
        lp += eta[j] * (ls + lsm);
        grad[k_prior + j] = eta[j] * (1.0 - 2.0 * sigmoid(z));
        rho[j] = tanh(0.5 * z);
        Lcorr[b * q + a] = rho[j];
        Lcorr[b * q + b] = 2.0 * exp(0.5 * (ls + lsm)); /* sqrt(1 - rho^2) = 2 sqrt(u (1 - u)) */
    }
    for (int i = 0; i < q; i++)
        for (int j = 0; j < q; j++) Lam[i * q + j] = vals[n_beta + 1 + i] * Lcorr[i * q + j];
    double ll = marginal_loglik(n_beta, G, q, beta, sigma, Lam, n, WtW, Wty, yty, ZtZ, ZtW, Zty, g_beta,
                                g_lam, &g_sigma);
    for (int k = 0; k < n_beta; k++) grad[k] += g_beta[k] * dxdz[k];
    grad[n_beta] += g_sigma * dxdz[n_beta];
    for (int i = 0; i < q; i++) {
        double t = 0.0;
        for (int j = 0; j < q; j++) t += g_lam[i * q + j] * Lcorr[i * q + j];
        grad[n_beta + 1 + i] += t * dxdz[n_beta + 1 + i];
    }
    for (int j = 0; j < n_pairs; j++) {
        int a = (int)pair_a[j], b = (int)pair_b[j];
        double root = Lcorr[b * q + b];
        if (root > 0.0) {
            double d_rho = vals[n_beta + 1 + b] * (g_lam[b * q + a] - g_lam[b * q + b] * rho[j] / root);
            grad[k_prior + j] += d_rho * 0.5 * root * root; /* drho/dz = (1 - rho^2)/2 */
        }
    }
    return lp + ll;
}

/* nutpie's log-density callback: 0 on success, nonzero codes as nutpie's numba callbacks use them. */
int64_t lmm_logp(uint64_t dim, const double *x, double *out, double *logp, const double *buf) {
    if (dim != (uint64_t)buf[1]) return -1;
    double value = lmm_log_density(x, out, buf);
    *logp = value;
    for (uint64_t i = 0; i < dim; i++)
        if (!isfinite(out[i])) return 3;
    if (!isfinite(value)) return 4;
    return 0;
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
