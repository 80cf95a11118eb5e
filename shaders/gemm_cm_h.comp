// gemm_cm_h.comp — cooperative-matrix GEMM, f16 in, f16 output (see gemm_coopmat.glsl).
#version 450
#define C_F16 1
#include "gemm_coopmat.glsl"
