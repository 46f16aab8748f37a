// ggml's reference quantizers for Q8_0 and Q4_0 (`quantize_row_q8_0_ref`,
// `quantize_row_q4_0_ref` from ggml's src/ggml-quants.c at commit d99724f2, MIT licence,
// copyright the ggml authors), which `ggml_quantize_chunk` runs for these types (llama.cpp's
// `llama-quantize`), timed on the same data as qnumeric's formats bench: 4M f32 values,
// best of 10 passes, one thread. The f16 scale goes through F16C, as ggml's CPU backend does
// on x86. Build and run: benches/ggml_c/compare.sh.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <immintrin.h>

#define QK 32
typedef struct { uint16_t d; int8_t qs[QK]; } block_q8_0;
typedef struct { uint16_t d; uint8_t qs[QK / 2]; } block_q4_0;
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define FP32_TO_FP16(x) _cvtss_sh(x, 0)

void quantize_row_q8_0_ref(const float *restrict x, block_q8_0 *restrict y, int64_t k) {
    const int nb = k / QK;
    for (int i = 0; i < nb; i++) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) {
            const float v = x[i * QK + j];
            amax = MAX(amax, fabsf(v));
        }
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = FP32_TO_FP16(d);
        for (int j = 0; j < QK; ++j) {
            const float x0 = x[i * QK + j] * id;
            y[i].qs[j] = roundf(x0);
        }
    }
}

void quantize_row_q4_0_ref(const float *restrict x, block_q4_0 *restrict y, int64_t k) {
    const int qk = QK;
    const int nb = k / qk;
    for (int i = 0; i < nb; i++) {
        float amax = 0.0f;
        float max = 0.0f;
        for (int j = 0; j < qk; j++) {
            const float v = x[i * qk + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = FP32_TO_FP16(d);
        for (int j = 0; j < qk / 2; ++j) {
            const float x0 = x[i * qk + 0 + j] * id;
            const float x1 = x[i * qk + qk / 2 + j] * id;
            const uint8_t xi0 = MIN(15, (int8_t)(x0 + 8.5f));
            const uint8_t xi1 = MIN(15, (int8_t)(x1 + 8.5f));
            y[i].qs[j] = xi0;
            y[i].qs[j] |= xi1 << 4;
        }
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const int64_t n = 4 << 20;
    float *x = malloc(n * sizeof(float));
    uint64_t s = 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((s >> 40) * (1.0 / 16777216.0)) * 4.0f - 2.0f;
    }
    block_q8_0 *q8 = malloc(n / QK * sizeof(block_q8_0));
    block_q4_0 *q4 = malloc(n / QK * sizeof(block_q4_0));
    double b8 = 1e9, b4 = 1e9;
    for (int r = 0; r < 10; r++) {
        double t = now();
        quantize_row_q8_0_ref(x, q8, n);
        b8 = MIN(b8, now() - t);
        t = now();
        quantize_row_q4_0_ref(x, q4, n);
        b4 = MIN(b4, now() - t);
    }
    unsigned sum = 0;
    for (int64_t i = 0; i < n / QK; i++) sum += q8[i].qs[3] + q4[i].qs[5];
    printf("ggml C reference (gcc -O3 -march=native), %lld f32 in:\n", (long long)n);
    printf("Q8_0 quantize  %8.2f ms\nQ4_0 quantize  %8.2f ms\n(checksum %u)\n", b8 * 1e3,
           b4 * 1e3, sum);
    return 0;
}
