// gemm_cm_lh.comp — cooperative-matrix GEMM (see gemm_coopmat.glsl): large products, f16 output.
#version 450
#define C_F16 1
#define TILE_M 128
#define TILE_N 64
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 2
#include "gemm_coopmat.glsl"
