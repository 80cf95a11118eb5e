// gemm_cm.comp — cooperative-matrix GEMM, f16 in, fp32 output (see gemm_coopmat.glsl).
#version 450
#define C_F16 0
#include "gemm_coopmat.glsl"
