// gemm_cm_wha.comp — cooperative-matrix GEMM (see gemm_coopmat.glsl): large products whose N
// is a multiple of 96, f16 output with the activation (the up product). Unlike gemm_cm_wh the
// next slice is prefetched into registers: with the activation in the epilogue this measured
// faster (docs/bench-gemm.md). The activation runs on the f16 tile staged for the store, not
// on the fp32 accumulators, and spirv-opt runs on it (Makefile): up product with GELU on an
// H200 at M = 245760, 1774 us against 1839 with the activation on the accumulators, unoptimised.
#version 450
#define C_F16 1
#define TILE_M 128
#define TILE_N 96
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 2
#define ACT_AT_STORE 1
#include "gemm_coopmat.glsl"
