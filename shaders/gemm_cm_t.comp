// gemm_cm_t.comp — cooperative-matrix GEMM (see gemm_coopmat.glsl): 32x64 tiles for the smallest grids, f32 output.
#version 450
#define C_F16 0
#define TILE_M 32
#define TILE_N 64
#define WARPS_M 2
#define WARPS_N 4
#define TILES_M 1
#include "gemm_coopmat.glsl"
