// gemm_i8_qf.comp — gemm_i8_q.comp's tiles for the down product that quantises its own f16 input
// (F16A in gemm_i8.glsl).
#version 450
#define TILE_M 128
#define TILE_N 128
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 2
#define F16A 1
#include "gemm_i8.glsl"
