// gemm_cm_wha.comp — cooperative-matrix GEMM (see gemm_coopmat.glsl): large products whose N
// is a multiple of 96, f16 output with the activation (the up product). Unlike gemm_cm_wh the
// next slice is prefetched into registers: with the activation in the epilogue this measured
// faster (docs/bench-gemm.md).
#version 450
#define C_F16 1
#define TILE_M 128
#define TILE_N 96
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 2
#include "gemm_coopmat.glsl"
