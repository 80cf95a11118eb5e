// gemm_cm_hs.comp — cooperative-matrix GEMM (see gemm_coopmat.glsl): 64x64 tiles for small grids, f16 output.
#version 450
#define C_F16 1
#define TILE_M 64
#define TILE_N 64
#define WARPS_M 2
#define WARPS_N 4
#define TILES_M 1
#include "gemm_coopmat.glsl"
