// gemm_i8_sf.comp — gemm_i8_s.comp's tiles for the down product that quantises its own f16 input
// (F16A in gemm_i8.glsl).
#version 450
#define TILE_M 64
#define TILE_N 64
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 1
#define F16A 1
#include "gemm_i8.glsl"
