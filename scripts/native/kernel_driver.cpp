// Runs the CPU kernels on inputs read from stdin and writes the results to stdout, so that a build for
// another architecture can be checked under an emulator (scripts/check_cross_build.py, qemu-user).
// stdin: int64 batch, dim, L, NP, G, reverse, K; then float32 arrays (see check_cross_build.py).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

extern "C" {
int vm_selective_scan_fwd(const float*, const float*, const float*, const float*, const float*, const float*,
                          const float*, const float*, int, int, int64_t, int64_t, int64_t, int64_t, int64_t,
                          const float*, const float*, float*, float*, int);
int vm_selective_scan_bwd(const float*, const float*, const float*, const float*, const float*, const float*,
                          const float*, const float*, int, int, int64_t, int64_t, int64_t, int64_t, int64_t,
                          const float*, const float*, const float*, float*, float*, float*, float*, float*, float*,
                          float*, float*, float*, float*, int);
int vm_causal_conv1d_fwd(const float*, const float*, const float*, int, int, int64_t, int64_t, int64_t, int64_t,
                         float*, int);
int vm_causal_conv1d_bwd(const float*, const float*, const float*, int, int, int64_t, int64_t, int64_t, int64_t,
                         const float*, float*, float*, float*, int);
const char* vm_selective_scan_target_isa();
}

static std::vector<float> read(size_t n) {
    std::vector<float> v(n);
    if (std::fread(v.data(), sizeof(float), n, stdin) != n) { std::fprintf(stderr, "short input\n"); std::exit(2); }
    return v;
}
static void write(const std::vector<float>& v) { std::fwrite(v.data(), sizeof(float), v.size(), stdout); }

int main() {
    int64_t h[7];
    if (std::fread(h, sizeof(int64_t), 7, stdin) != 7) return 2;
    const int64_t batch = h[0], dim = h[1], L = h[2], NP = h[3], G = h[4], K = h[6];
    const int reverse = static_cast<int>(h[5]);
    const size_t row = batch * dim * L, bc = batch * G * L * NP;
    auto u = read(row), delta = read(row), A = read(dim * NP), B = read(bc), C = read(bc), D = read(dim),
         z = read(row), bias = read(dim), dout = read(row), dlast = read(batch * dim * NP);
    auto x = read(row), w = read(dim * K), cb = read(dim), dy = read(row);
    std::vector<float> out(row), last(batch * dim * NP), du(row), ddelta(row), dA(batch * dim * NP), dB(bc, 0.0f),
        dC(bc, 0.0f), dD(batch * dim), dz(row), dbias(batch * dim);
    int rc = vm_selective_scan_fwd(u.data(), delta.data(), A.data(), B.data(), C.data(), D.data(), z.data(),
                                   bias.data(), 1, reverse, batch, dim, L, NP, G, nullptr, nullptr, out.data(), last.data(),
                                   2);
    rc |= vm_selective_scan_bwd(u.data(), delta.data(), A.data(), B.data(), C.data(), D.data(), z.data(), bias.data(),
                                1, reverse, batch, dim, L, NP, G, nullptr, dout.data(), dlast.data(), du.data(),
                                ddelta.data(), dA.data(), dB.data(), dC.data(), dD.data(), dz.data(), dbias.data(),
                                nullptr, nullptr, 2);
    std::vector<float> y(row), dx(row), dw(batch * dim * K), db(batch * dim);
    rc |= vm_causal_conv1d_fwd(x.data(), w.data(), cb.data(), 1, reverse, batch, dim, L, K, y.data(), 2);
    rc |= vm_causal_conv1d_bwd(x.data(), w.data(), cb.data(), 1, reverse, batch, dim, L, K, dy.data(), dx.data(),
                               dw.data(), db.data(), 2);
    if (rc) return 3;
    for (const auto* v : {&out, &last, &du, &ddelta, &dA, &dB, &dC, &dD, &dz, &dbias, &y, &dx, &dw, &db}) write(*v);
    std::fprintf(stderr, "%s\n", vm_selective_scan_target_isa());
    return 0;
}
